"""Parses PromQL expressions with promql-parser and lists the metric names each one reads.

Reads a JSON list of expressions on stdin; prints a JSON list with, for each, either
{"metrics": [...]} or {"error": "..."}. Used by tests/tests/e2e/observability.rs, which
checks the names against a running stack's /metrics and Envoy's /stats/prometheus.
"""

import json
import sys

import promql_parser


def metric_names(expr):
    names = []
    problems = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if not name:
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        name = matcher.value
            if name:
                names.append(name)
            else:
                problems.append(f"a selector without a metric name: {node}")
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names, problems


def main():
    results = []
    for expr in json.load(sys.stdin):
        try:
            names, problems = metric_names(expr)
        except ValueError as error:
            results.append({"error": f"does not parse: {error}"})
            continue
        if problems:
            results.append({"error": "; ".join(problems)})
        else:
            results.append({"metrics": sorted(set(names))})
    json.dump(results, sys.stdout)


main()
