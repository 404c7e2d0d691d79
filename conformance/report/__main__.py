"""`python -m conformance.report`: see conformance.report.cli."""
from conformance.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
