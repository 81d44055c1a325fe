# Two commands matter: `make run` and `make test` (see README). Both create the virtual
# environment on first use from the pinned requirements.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The Spark engine runs in its own environment (pandas 2 for pyspark; see requirements-spark.txt).
SPARK_VENV ?= .venv-spark
export PLATFORM_HOME ?= $(CURDIR)/.platform
export DAGSTER_HOME ?= $(PLATFORM_HOME)/dagster
HOST ?= 127.0.0.1
PORT ?= 3000
# The browser test drives Debian's Chromium (Playwright's own browser download cannot work here).
CHROMIUM ?= /usr/bin/chromium
# Three test workers: the slow tests mostly wait on dagster dev and its runs, so they overlap
# well on two cores (12.9 min; earlier code took 21.6 in three workers, 23.2 in two and 36 in one: see README).
TEST_WORKERS ?= 3

.PHONY: run test lint bench seed freeze clean venv spark-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

$(SPARK_VENV)/.installed: requirements-spark.txt
	$(PYTHON) -m venv $(SPARK_VENV)
	$(SPARK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SPARK_VENV)/bin/python -m pip install --quiet -r requirements-spark.txt
	touch $@

spark-venv: $(SPARK_VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m cli dbt-parse
	$(PY) -m cli seed
	$(PY) -m cli dagster-home
	$(VENV)/bin/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the browser test needs Chromium at $(CHROMIUM) (Debian's chromium package)"; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }

test: $(VENV)/.installed $(SPARK_VENV)/.installed $(CHROMIUM)
	$(PY) -m ruff check .
	$(PY) -m cli dbt-parse
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

bench: $(VENV)/.installed
	$(PY) -m cli dbt-parse
	$(PY) bench/staging_bench.py
	$(PY) bench/staging_scale_bench.py
	$(PY) bench/sensor_bench.py
	$(PY) bench/s3_sensor_bench.py
	$(PY) bench/dbt_bench.py
	$(PY) bench/incremental_bench.py
	$(PY) bench/serving_bench.py
	$(PY) bench/compaction_bench.py
	$(PY) bench/spark_bench.py --rows 1000000 --files 1,2,4

freeze: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.txt.new && mv requirements.txt.new requirements.txt

clean:
	rm -rf $(VENV) $(SPARK_VENV) .platform
