"""``expr:`` rules: a PromQL subset over flarebus metric names (docs/rules.md, "Expressions").

lexer and parser turn the text into the syntax tree of ast.py, check.py types
it and finds the mistakes a rule file reports at file:line:col, functions.py
holds Prometheus' window and histogram functions, nodes.py the incremental
operators and evaluator.py the runtime the rule evaluator hands expr rules to.
"""
