"""`python -m metaemb ...` = the `metaemb` command (what scripts/airflow.sh runs)."""

import sys

from metaemb.cli import main

sys.exit(main())
