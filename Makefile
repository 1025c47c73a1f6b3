# Marionette: `make demo` and `make test` work on a fresh clone (they set everything up).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BLENDER_PY := .venv-blender/bin/python
BACKEND_PY := .venv/bin/python
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml)
ZIP := dist/marionette-$(VERSION).zip
EXTENSION_SOURCES := blender_manifest.toml $(shell find blender_addon rigs/presets rigs/face -name '*.py' -o -name '*.json')

.PHONY: setup extension test test-backend test-blender demo bench clean

setup: .venv-blender/.installed .venv/.installed

# Blender as a Python module (4.5 LTS) and pytest, nothing else: tests here prove the extension
# needs only what Blender bundles.
.venv-blender/.installed:
	$(PYTHON) -m venv .venv-blender
	$(BLENDER_PY) -m pip install -q --upgrade pip
	$(BLENDER_PY) -m pip install -q "bpy==4.5.*" pytest
	touch $@

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	$(BACKEND_PY) -m pip install -q --upgrade pip
	$(BACKEND_PY) -m pip install -q -e ".[diffusion,test]"
	touch $@

extension: $(ZIP)

$(ZIP): .venv-blender/.installed $(EXTENSION_SOURCES)
	$(BLENDER_PY) scripts/build_extension.py

test: setup extension test-backend test-blender

test-backend: .venv/.installed
	$(BACKEND_PY) -m pytest -q tests --ignore=tests/blender

test-blender: .venv-blender/.installed
	$(BLENDER_PY) -m pytest -q tests/blender

demo: setup extension
	rm -rf out/demo
	$(BLENDER_PY) scripts/demo.py --out out/demo

bench: setup extension
	$(BACKEND_PY) benchmarks/bench_backend.py
	$(BACKEND_PY) benchmarks/bench_animate_anyone.py
	mkdir -p out/bench/.blender-home
	HOME=$(CURDIR)/out/bench/.blender-home $(BLENDER_PY) benchmarks/bench_control_maps.py --zip $(ZIP)

clean:
	rm -rf build dist out
