# invdyn: `make demo` runs the main job, `make test` the whole suite. Both set up .venv first.
# Set-up is idempotent: it reinstalls only when a requirements file, setup.py or a compiled
# kernel's source (invdyn_ros/core/_fastpath.pyx, _lstm_kernel.pyx, _rational_tanh.h) changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Keep DDS on this machine for everything make starts (users' robots keep their own settings).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
# Two cores here: leave one for DDS and the other process of a pair.
export OMP_NUM_THREADS ?= 1
export MPLBACKEND := Agg
DEMO_OUT ?= demo_out

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py setup.cfg package.xml \
		invdyn_ros/core/_fastpath.pyx invdyn_ros/core/_lstm_kernel.pyx \
		invdyn_ros/core/_rational_tanh.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch from another package pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/invdyn demo --out $(DEMO_OUT) $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/python -m flake8 invdyn_ros test launch setup.py

test: $(STAMP)
	$(BIN)/python -m flake8 invdyn_ros test launch setup.py
	$(BIN)/python -m pytest -q test $(PYTEST_ARGS)

clean:
	rm -rf build install log $(DEMO_OUT) .pytest_cache
