"""Evaluation: eval sets (``benchmarks``), the frozen spec (``spec``), the streaming harness
(``harness``), the report (``report``) and the registry gate (``gate``). The stage around them is
``tasks/stages/evaluate.py``."""
