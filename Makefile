# The README's two commands are `make demo` and `make test`; both install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: install demo test lint clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || { echo "installing ffmpeg (ns-render writes videos with it)"; \
	  (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null) || echo "warning: could not install ffmpeg; ns-render videos will fail"; }
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { echo "installing chromium (the viewer's browser test drives it headless)"; \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "warning: could not install chromium; the browser test will be skipped"; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines take torch from the local wheel cache; an unpinned torch would pull gigabytes.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	# The official KITTI-360 devkit, only so the tests can compare our readers with it; its declared
	# dependencies are old pins we do not need (it reads calibration with numpy and yaml).
	$(BIN)/pip install -q --no-deps kitti360Scripts==1.0.0
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(DEMO_DIR)

lint: install
	$(BIN)/ruff check bts_studio tests benchmarks
	$(BIN)/ruff format --check bts_studio tests benchmarks

# pyproject's pytest addopts check every jaxtyping annotation of bts_studio at run time (beartype).
# pytest exits 5 when it collects no tests: say so plainly instead of failing with a bare code.
test: install lint
	@$(BIN)/pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_DIR)
