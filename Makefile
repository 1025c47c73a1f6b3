# Marionette: `make demo` and `make test` work on a fresh clone (they set everything up).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Blender 5.2 LTS as a module needs Python 3.13: on PATH, or one of pyenv's versions.
PYTHON313 ?= $(shell for candidate in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13; do \
	"$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && \
	{ command -v "$$candidate"; break; }; done)
BACKEND_PY := .venv/bin/python
# One Blender venv per supported LTS: 4.5 (the default), 5.2, and 4.2 for a smoke run.
BLENDER_VENV_4.5 := .venv-blender
BLENDER_VENV_5.2 := .venv-blender-5
BLENDER_VENV_4.2 := .venv-blender-42
# `make demo BLENDER=5.2` runs the demo in Blender 5.2 LTS.
BLENDER ?= 4.5
BLENDER_VENV := $(BLENDER_VENV_$(BLENDER))
BLENDER_PY := .venv-blender/bin/python
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml)
ZIP := dist/marionette-$(VERSION).zip
EXTENSION_SOURCES := blender_manifest.toml $(shell find blender_addon rigs/presets rigs/face -name '*.py' -o -name '*.json')

.PHONY: setup setup-blender-5 extension test test-backend test-blender test-blender-4.5 test-blender-5.2 \
	test-blender-4.2 demo bench bench-gpu clean

setup: .venv-blender/.installed .venv-blender-42/.installed .venv/.installed setup-blender-5

# Blender as a Python module and pytest, nothing else: tests here prove the extension needs only
# what Blender bundles.
.venv-blender/.installed:
	$(PYTHON) -m venv .venv-blender
	.venv-blender/bin/python -m pip install -q --upgrade pip
	.venv-blender/bin/python -m pip install -q "bpy==4.5.*" pytest
	touch $@

.venv-blender-42/.installed:
	$(PYTHON) -m venv .venv-blender-42
	.venv-blender-42/bin/python -m pip install -q --upgrade pip
	.venv-blender-42/bin/python -m pip install -q "bpy==4.2.*" pytest
	touch $@

# Without Python 3.13 the 5.2 venv cannot exist: say so on a line of its own; under CI that fails.
setup-blender-5:
ifeq ($(PYTHON313),)
	@echo "NO PYTHON 3.13: Blender 5.2 LTS (bpy 5.2) is not set up and its tests do not run"
	@if [ "$$CI" = "true" ]; then echo "CI needs Python 3.13 for the Blender 5.2 LTS tests" >&2; exit 1; fi
else
	@$(MAKE) --no-print-directory .venv-blender-5/.installed
endif

.venv-blender-5/.installed:
	$(PYTHON313) -m venv .venv-blender-5
	.venv-blender-5/bin/python -m pip install -q --upgrade pip
	.venv-blender-5/bin/python -m pip install -q "bpy==5.2.*" pytest
	touch $@

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	$(BACKEND_PY) -m pip install -q --upgrade pip
	$(BACKEND_PY) -m pip install -q -e ".[diffusion,cluster,test]"
	touch $@

extension: $(ZIP)

$(ZIP): .venv-blender/.installed $(EXTENSION_SOURCES)
	$(BLENDER_PY) scripts/build_extension.py

test: setup extension test-backend test-blender

test-backend: .venv/.installed
	$(BACKEND_PY) -m pytest -q tests --ignore=tests/blender

# The whole real-Blender suite on 4.5 LTS and 5.2 LTS; the smoke tests on 4.2 LTS.
test-blender: test-blender-4.5 test-blender-5.2 test-blender-4.2

test-blender-4.5: .venv-blender/.installed
	MARIONETTE_BLENDER_PYTHON=$(CURDIR)/.venv-blender/bin/python .venv-blender/bin/python -m pytest -q -rs tests/blender

test-blender-5.2: setup-blender-5
	@if [ -x .venv-blender-5/bin/python ]; then \
		echo "MARIONETTE_BLENDER_PYTHON=$(CURDIR)/.venv-blender-5/bin/python .venv-blender-5/bin/python -m pytest -q -rs tests/blender"; \
		MARIONETTE_BLENDER_PYTHON=$(CURDIR)/.venv-blender-5/bin/python .venv-blender-5/bin/python -m pytest -q -rs tests/blender; \
	else echo "NO PYTHON 3.13: the Blender 5.2 LTS tests did not run"; fi

test-blender-4.2: .venv-blender-42/.installed
	MARIONETTE_BLENDER_PYTHON=$(CURDIR)/.venv-blender-42/bin/python .venv-blender-42/bin/python -m pytest -q -rs -m smoke tests/blender

demo: setup extension
	rm -rf out/demo
	$(BLENDER_VENV)/bin/python scripts/demo.py --out out/demo

bench: setup extension
	$(BACKEND_PY) benchmarks/bench_backend.py
	$(BACKEND_PY) benchmarks/bench_animate_anyone.py
	$(BACKEND_PY) benchmarks/bench_echomimic.py
	$(BACKEND_PY) benchmarks/bench_wan_animate.py
	$(BACKEND_PY) benchmarks/bench_wan_animate_2.py
	$(BACKEND_PY) benchmarks/bench_wan_vace.py
	$(BACKEND_PY) benchmarks/bench_connection_limits.py
	$(BACKEND_PY) benchmarks/bench_cluster.py
	mkdir -p out/bench/.blender-home
	HOME=$(CURDIR)/out/bench/.blender-home $(BLENDER_PY) benchmarks/bench_control_maps.py --zip $(ZIP)
	HOME=$(CURDIR)/out/bench/.blender-home $(BLENDER_PY) benchmarks/bench_driving.py --zip $(ZIP)

# On a GPU machine: every GPU measurement of the engines (benchmarks/gpu_suite.py), resumable.
bench-gpu: setup
	$(BACKEND_PY) benchmarks/gpu_suite.py --out out/gpu-suite

clean:
	rm -rf build dist out
