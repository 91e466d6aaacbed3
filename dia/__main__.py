"""`python -m dia` is the same command as `dia`."""

from dia.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
