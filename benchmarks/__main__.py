"""``python -m benchmarks [names...] [--mode memory|sqlite|http|postgres] [--quick]``."""

from benchmarks._runner import main

main()
