# napari-cosine-tracker: `make test` and `make demo` set everything up on a fresh Debian
# machine (run as root, or with sudo available): Debian packages for drawing napari under Xvfb,
# a virtual environment in .venv with the pinned CPU torch, the package with its test extras.
# Re-runs skip what is already done (stamp files in .venv).

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pinned: an unpinned torch resolves to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
INSTALL_STAMP := $(VENV)/.nct-install.stamp
GUI_STAMP := $(VENV)/.nct-gui.stamp

# Libraries PyQt6/napari need to open windows and draw with OpenGL under Xvfb.
APT_PACKAGES := xvfb xauth libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libglib2.0-0 \
	libfontconfig1 libdbus-1-3 libx11-xcb1 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1

.PHONY: test demo setup system-deps

# Install only the missing Debian packages (one apt-get update at most); python3-venv too
# when this python3 cannot make virtual environments.
system-deps:
	@if ! command -v dpkg-query >/dev/null; then \
		echo "not Debian: install Xvfb and the Qt/OpenGL libraries yourself"; exit 0; fi; \
	missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ ! -x $(PY) ] && ! $(PYTHON) -c "import ensurepip, venv" 2>/dev/null; then \
		missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "installing Debian packages:$$missing"; \
		$$sudo apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(PY): | system-deps
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that the package's own `torch>=...` is already satisfied.
$(INSTALL_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Proof that the GUI stack works: PyQt6 imports and a napari viewer draws under Xvfb.
$(GUI_STAMP): $(INSTALL_STAMP) | system-deps
	xvfb-run -a $(PY) -c "import numpy as np; from PyQt6 import QtWidgets; import napari; \
	v = napari.Viewer(show=True); v.add_image(np.random.rand(32, 32)); \
	img = v.screenshot(canvas_only=True); v.close(); \
	assert img[..., :3].std() > 0, 'napari drew a blank canvas'; \
	print('napari draws under Xvfb')"
	touch $@

setup: system-deps $(INSTALL_STAMP) $(GUI_STAMP)

# pytest exit 5 means no test was collected: that is a failure, never a pass.
test: setup
	@xvfb-run -a $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: setup
	$(if $(DISPLAY),,xvfb-run -a) $(PY) -m napari_cosine_tracker.demo
