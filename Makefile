# The two commands of the README's Quick start: `make demo` and `make test`.
# Both create .venv if missing and install the project once (a stamp file records it).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 is the pair that works with segmentation-models-pytorch here
TORCH  := torch==2.14.1 torchvision==0.29.1
# Debian packages napari/Qt needs for an OpenGL context in tests (Xvfb, xcb plugins, GL)
XVFB_DEBS := xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0

.PHONY: demo test lint format install xvfb bench clean

demo: $(STAMP)
	$(VENV)/bin/pointseg train sample_data/nuclei_image.tif sample_data/nuclei_points.csv \
		--mask sample_data/nuclei_mask.tif --out results/nuclei

LINTED := src tests benchmarks scripts

test: $(STAMP) xvfb lint
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q

# ruff (lint + format) as configured in pyproject.toml; `make format` applies the formatting
lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

format: $(STAMP)
	$(PY) -m ruff format $(LINTED)
	$(PY) -m ruff check --fix $(LINTED)

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	@# one Qt binding only: a venv made before the move to PyQt6 still has PyQt5, which qtpy
	@# would pick for napari while pytest-qt picks PyQt6
	$(PIP) uninstall -y -q PyQt5 PyQt5-Qt5 PyQt5-sip 2>/dev/null || true
	$(PIP) install -e ".[test]"
	touch $(STAMP)

xvfb:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! ldconfig -p | grep -q libxkbcommon-x11; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Xvfb and Qt's X libraries (Debian packages)"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(XVFB_DEBS); \
	fi

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf results build dist .pytest_cache
