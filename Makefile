# Two commands matter: `make test` and `make demo`. Both create .venv on first use and
# reuse it afterwards (re-installing only when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgesdk-installed

.PHONY: test test-all test-jvm demo bench venv clean fuzz browser zoo-deps zoo dist

# Both distributions from this checkout, at the exact versions of constraints.txt (pyproject.toml
# declares ranges): edge-sdk-runtime editable, then edge-sdk with the checkout's root on sys.path
# ("compat" editable mode), where edgesdk.py maps sdk/, runtime/, models/ and converters/ to
# `edgesdk.*` as the wheels do (and new files need no reinstall). setuptools calls "compat"
# transitional; should it go, a .pth file holding this folder's path does the same.
$(STAMP): pyproject.toml runtime/pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e './runtime[onnx,litert,executorch,qnn,signing]'
	$(PY) -m pip install --quiet -c constraints.txt --config-settings editable_mode=compat -e '.[dev,cluster]'
	$(PY) -m pip check
	@touch $@

venv: $(STAMP)

# One pytest-xdist worker per usable core, at most 4 (TEST_WORKERS=0 runs serially). Serially the
# suite kept one of 2 cores busy on average (1557 core-s in 1465 s); whole files go to a worker
# (--dist loadfile) so a module's converted artifacts are built once.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; n = len(os.sched_getaffinity(0)); print(0 if n < 2 else min(n, 4))')

test: gpu-sim $(STAMP) test-jvm browser zoo-deps
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP) zoo-deps
	$(PY) -m pytest -q

demo: $(STAMP) gpu-sim
	$(VENV)/bin/edgesdk demo

bench: $(STAMP)
	$(PY) benchmarks/runtime_overhead.py

# JVM unit tests of the Android app's shared core (android_demo/core, plain Java): javac and
# JUnit 4 from Debian (installed here when missing), output in build/jvm (ignored). The full APK
# build needs the Android SDK and Google's Maven: see android_demo/README.md.
JAVA_CORE := android_demo/core
JVM_OUT   := build/jvm
JUNIT_CP  := /usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET   := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

test-jvm:
	@mkdir -p build
	@command -v javac >/dev/null 2>&1 && test -f /usr/share/java/junit4.jar || { \
	  echo "installing javac/JUnit 4 from Debian (default-jdk-headless junit4)"; \
	  ( $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends default-jdk-headless junit4 ) \
	    >build/apt-jvm.log 2>&1 || { cat build/apt-jvm.log; echo "apt-get install failed (see above)"; exit 1; }; }
	@rm -rf $(JVM_OUT) && mkdir -p $(JVM_OUT)/main $(JVM_OUT)/test
	javac -Xlint:all -Werror --release 8 -encoding UTF-8 -d $(JVM_OUT)/main $$(find $(JAVA_CORE)/src/main/java -name '*.java')
	javac -nowarn --release 8 -encoding UTF-8 -cp $(JVM_OUT)/main:$(JUNIT_CP) -d $(JVM_OUT)/test $$(find $(JAVA_CORE)/src/test/java -name '*.java')
	java -Dedgesdk.root=$(CURDIR) -cp $(JVM_OUT)/main:$(JVM_OUT)/test:$(JUNIT_CP) org.junit.runner.JUnitCore \
	  $$(cd $(JAVA_CORE)/src/test/java && find . -name '*Test.java' | sed 's|^\./||; s|\.java$$||; s|/|.|g' | sort)

# Headless Chromium for the report test (tests/test_report.py loads report.html in it): Debian's
# `chromium`, installed here when missing (quiet; the log goes to build/apt-browser.log).
browser:
	@mkdir -p build
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium from Debian (headless report test)"; \
	  ( $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends chromium ) \
	    >build/apt-browser.log 2>&1 || { cat build/apt-browser.log; echo "apt-get install failed (see above)"; exit 1; }; }

clean:
	rm -rf edgesdk-out .pytest_cache dist

# Release files: the wheels and sdists of edge-sdk-runtime (runtime/) and edge-sdk (.) in dist/,
# checked with twine. `benchmarks/install_size.py` installs them into fresh venvs and measures them.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist runtime
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

# Software GPU for litert-gpu: Mesa >= 25 lavapipe (Debian bookworm-backports mesa-vulkan-drivers)
# unpacked into $(GPU_SIM_DIR) by apt with private state (no root, nothing installed system-wide),
# then checked by running a probe model on LiteRT's GPU accelerator; fails loudly otherwise.
# A second run is a no-op; `rm -rf $(GPU_SIM_DIR)` to refresh. See scripts/gpu-sim.sh.
GPU_SIM_DIR ?= .cache/gpu-sim
.PHONY: gpu-sim

gpu-sim: $(STAMP)
	bash scripts/gpu-sim.sh $(GPU_SIM_DIR)
	EDGESDK_GPU_SIM=$(abspath $(GPU_SIM_DIR)) $(PY) -m edgesdk.runtime.litert_gpu

# Longer fuzzing of the manifest parser and input validation (make test runs a bounded, seeded pass).
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	mkdir -p build/fuzz-corpus
	cd build && ../$(PY) ../tests/fuzz/fuzz_runtime.py -max_total_time=$(FUZZ_SECONDS) fuzz-corpus ../tests/fuzz/regressions

# Public architectures for benchmarks/zoo.py and a few tests: torchvision and timm go into a private
# folder, not the venv. The registry's torchvision wheel is a CUDA build whose ops library does not
# load beside the CPU torch, and once torchvision is importable transformers imports it and fails;
# benchmarks/zoo_models.py declares torchvision's two ops and puts the folder on sys.path itself.
ZOO_SITE ?= .cache/zoo-site
ZOO_PKGS := torchvision==0.28.0 timm==1.0.31
zoo-deps: $(STAMP)
	@test -d $(ZOO_SITE)/torchvision -a -d $(ZOO_SITE)/timm || \
	  $(PY) -m pip install --quiet --no-deps --target $(ZOO_SITE) -c constraints.txt $(ZOO_PKGS)

# The zoo benchmark, resumable (results in edgesdk-out/zoo/zoo.json): conversions, then latency.
zoo: zoo-deps
	$(PY) benchmarks/zoo.py convert
	$(PY) benchmarks/zoo.py dynamic
	$(PY) benchmarks/zoo.py profile
	$(PY) benchmarks/zoo.py report
