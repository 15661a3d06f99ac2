# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   runtime-only venv (no torch), classify a photo offline and benchmark the built-in model
#   make test   full dev venv (torch, timm, OpenVINO, NNCF, ...) and the whole test suite
PY ?= python3
RUNTIME_VENV := .venv-runtime
DEV_VENV := .venv
PHOTO ?= $(firstword $(wildcard ../shared/data/pad_ufes_20/images/PAT_1006_53_716.jpg) examples/data/demo_lesion.png)

.PHONY: demo test lint clean default-model

# Regenerates the built-in model from ../shared/data (about 1.5 h on a 2-core CPU):
# SSL pre-training, then export + INT8 + gate + head + evaluation + model card into dermedge/models/default.
DEFAULT_RUN := runs/default-simclr-convnext_atto
default-model: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/dermedge train --method simclr --arch convnext_atto --data ../shared/data --img-size 112 \
	    --epochs 12 --batch-size 128 --lr 0.002 --num-workers 1 --out $(DEFAULT_RUN) warmup_epochs=1 "method_kwargs={temperature: 0.2}"
	$(DEV_VENV)/bin/python -m export.default_model --run $(DEFAULT_RUN) --data ../shared/data --out dermedge/models/default --baselines

$(RUNTIME_VENV)/.done: pyproject.toml
	$(PY) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q --upgrade pip
	$(RUNTIME_VENV)/bin/pip install -q ".[openvino]"
	touch $@

demo: $(RUNTIME_VENV)/.done
	@test -f "$(PHOTO)" || $(RUNTIME_VENV)/bin/python examples/make_demo_image.py examples/data/demo_lesion.png
	cd /tmp && $(CURDIR)/$(RUNTIME_VENV)/bin/dermedge info
	cd /tmp && $(CURDIR)/$(RUNTIME_VENV)/bin/dermedge classify "$(abspath $(PHOTO))"
	cd /tmp && $(CURDIR)/$(RUNTIME_VENV)/bin/dermedge bench --quick

$(DEV_VENV)/.done: pyproject.toml constraints.txt
	$(PY) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q --upgrade pip
	$(DEV_VENV)/bin/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(DEV_VENV)/bin/pip install -q -c constraints.txt -e ".[train,export,openvino,signing,dev]"
	touch $@

test: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/python -m pytest -q

lint: $(DEV_VENV)/.done  ## ruff (style) and mypy --strict on the runtime
	$(DEV_VENV)/bin/ruff check dermedge training export benchmarks tests
	$(DEV_VENV)/bin/mypy

clean:
	rm -rf $(RUNTIME_VENV) $(DEV_VENV) build *.egg-info
