"""``python -m benchmarks [names...] [--mode memory|sqlite|http] [--quick]``."""

from benchmarks._runner import main

main()
