# The two commands of the README: `make demo` and `make test`. Both set up what they need
# on a fresh Debian machine (run as root): the virtual environment with the Python
# dependencies, and dumpcap/tshark and iproute2 from Debian's packages when missing.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
APT    := DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0

.PHONY: demo test lint unit system-deps browser-deps env clean-env cleanup bench serve

demo: env system-deps
	$(VENV)/bin/testbed run profiles/radio_outage.yaml

test: env system-deps browser-deps lint
	$(PY) -m pytest

unit: env
	$(PY) -m pytest tests/unit

lint: env
	$(VENV)/bin/ruff check testbed drivers tests bench
	$(VENV)/bin/ruff format --check testbed drivers tests bench
	$(VENV)/bin/mypy

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV) || { $(APT) update && $(APT) install python3-venv && python3 -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# dumpcap comes with Debian's tshark package; `ip` with iproute2; the dashboard's browser
# tests use Debian's chromium and chromium-driver.
system-deps:
	@command -v dumpcap >/dev/null && command -v tshark >/dev/null && command -v ip >/dev/null || \
	  { echo "installing tshark and iproute2 from Debian's packages"; \
	    $(APT) update >/dev/null && $(APT) install tshark iproute2 >/dev/null; }

browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "installing chromium and chromium-driver from Debian's packages"; \
	    $(APT) update >/dev/null && $(APT) install chromium chromium-driver >/dev/null; }

# The dashboard on http://127.0.0.1:8080/ over results/ (testbed serve --help for more).
serve: env
	$(VENV)/bin/testbed serve

cleanup: env
	$(VENV)/bin/testbed cleanup

# Benchmarks print figures beside a reference measured in the same run; they are not tests.
bench: env system-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(PY) bench/topology.py
	$(PY) bench/impairment.py
	$(PY) bench/priority.py
	$(PY) bench/traffic.py
	$(PY) bench/analysis.py
	$(PY) bench/api.py

clean-env:
	rm -rf $(VENV)
