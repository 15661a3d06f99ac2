# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   runtime-only venv (no torch), classify a photo offline and benchmark the built-in model
#   make test   full dev venv (torch, timm, OpenVINO, NNCF, ...) and the whole test suite
PY ?= python3
RUNTIME_VENV := .venv-runtime
DEV_VENV := .venv
PHOTO ?= $(firstword $(wildcard ../shared/data/pad_ufes_20/images/PAT_1006_53_716.jpg) examples/data/demo_lesion.png)

.PHONY: demo test lint clean default-model check-default-model two-scale-model pipeline web cpp

# Regenerates the built-in model from ../shared/data (about 3.7 h on a 2-core CPU with native BF16):
# stage 1 skin-aware SimCLR (labels unused) for 16 epochs, continued for 16 more from its weights with a
# fresh schedule (init_from), stage 2 fine-tuning on the labelled training split (up to 36 epochs, early
# stopping on validation macro-F1), then export + INT8 + gate + head + evaluation + model card into
# dermedge/models/default. Since 0.4.0 the embedding appends an 8x8x8 colour histogram of the crop, since 0.5.0
# also the pooled outputs of stages 2 and 1, all computed inside the encoder file (dermedge/export/colour.py,
# dermedge/training/encoders.py WithStagePools).
SSL_RUN := runs/ssl-skin-simclr-atto112
SSL32_RUN := runs/ssl-skin-simclr-atto112-32ep
DEFAULT_RUN := runs/ft-skin-simclr-atto112-32ep-long
default-model: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/dermedge train --method simclr --arch convnext_atto --data ../shared/data --img-size 112 \
	    --epochs 16 --batch-size 128 --lr 0.002 --num-workers 1 --out $(SSL_RUN) warmup_epochs=1 \
	    "method_kwargs={temperature: 0.2}" augment=skin cache=true
	$(DEV_VENV)/bin/dermedge train --method simclr --arch convnext_atto --data ../shared/data --img-size 112 \
	    --epochs 16 --batch-size 128 --lr 0.001 --num-workers 1 --out $(SSL32_RUN) warmup_epochs=1 \
	    "method_kwargs={temperature: 0.2}" augment=skin cache=true init_from=$(SSL_RUN)
	$(DEV_VENV)/bin/dermedge finetune --checkpoint $(SSL32_RUN) --data ../shared/data --out $(DEFAULT_RUN) \
	    --epochs 36 --patience 10 --batch-size 64 --num-workers 1 --head-warmup-epochs 0 --lr-encoder 5e-4 --ema 0.998
	$(DEV_VENV)/bin/python -m dermedge.export.default_model --run $(DEFAULT_RUN) --data ../shared/data --out dermedge/models/default --baselines \
	    --version 0.5.1 --colour-histogram 8 --pooled-stages 2,1 \
	    --yardstick benchmarks/results/amd-epyc-2cpu/encoders_stage_pools.json

# Rebuilds the export half of the built-in model (about 8 min) from its own encoder, recovered from the bundle
# (runs/ does not survive a fresh machine), and checks that the encoder file and the head come out byte-identical:
# the card's figures are then what this machine measures too.
check-default-model: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/dermedge import-checkpoint --format bundle dermedge/models/default --out runs/from-051
	$(DEV_VENV)/bin/python -m dermedge.export.default_model --run runs/from-051 --data ../shared/data --out build/rebuilt-default \
	    --baselines --version 0.5.1 --colour-histogram 8 --pooled-stages 2,1 \
	    --yardstick benchmarks/results/intel-xeon-2cpu/encoders_051_recovered.json
	cmp build/rebuilt-default/encoder.onnx dermedge/models/default/encoder.onnx
	cmp build/rebuilt-default/head.npz dermedge/models/default/head.npz
	@echo "the built-in model rebuilds byte for byte (encoder.onnx, head.npz); report: build/rebuilt-default/report.json"

# The whole model as one ONNX graph for apps in any language, the offline web page and the C++ app.
pipeline: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/dermedge export-pipeline dermedge/models/default --out build/pipeline/dermedge.onnx --openvino
web: pipeline
	cd examples/web && npm install --no-audit --no-fund && node build.mjs ../../build/pipeline/dermedge.onnx
cpp: pipeline
	cmake -S examples/cpp -B build/cpp -DOpenVINO_DIR="$$($(DEV_VENV)/bin/python -c 'import openvino, pathlib; print(pathlib.Path(openvino.__file__).parent / "cmake")')"
	cmake --build build/cpp -j2

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
	# lightly: golden values for our SSL losses (tests only); --no-deps keeps pytorch-lightning and a torch upgrade out
	$(DEV_VENV)/bin/pip install -q --no-deps lightly==1.6.0
	touch $@

test: $(DEV_VENV)/.done
	$(DEV_VENV)/bin/python -m pytest -q

lint: $(DEV_VENV)/.done  ## ruff (style) and mypy --strict on the runtime
	$(DEV_VENV)/bin/ruff check dermedge training export benchmarks tests
	$(DEV_VENV)/bin/mypy

clean:
	rm -rf $(RUNTIME_VENV) $(DEV_VENV) build *.egg-info

# The two-scale variant of the built-in model (opt-in, not the default; about 15 min): the same encoder, input
# at 224 px, its stages 0 and 1 also run at full size (export --fine-stages 0,1). Yardstick, through the runtime:
# internal macro-F1 0.500 vs 0.482, SD-198 0.341 vs 0.329, melanoma AUROC 0.885 vs 0.887, at 2.4x the encoder
# latency and a third of the folder throughput (benchmarks/results/intel-xeon-2cpu/README.md, "fine stages").
two-scale-model: $(DEV_VENV)/.done
	[ -f runs/from-051/encoder.safetensors ] || \
	    $(DEV_VENV)/bin/dermedge import-checkpoint --format bundle dermedge/models/default --out runs/from-051
	$(DEV_VENV)/bin/python -m dermedge.export.default_model --run runs/from-051 --data ../shared/data \
	    --out build/bundles/0.6.0 --full-out build/default-full-060 --baselines --version 0.6.0 \
	    --colour-histogram 8 --pooled-stages 2,1 --fine-stages 0,1
