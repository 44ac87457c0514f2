# The README's two commands are `make demo` and `make test`; everything depends on `install`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KUSTOMIZE := .cache/bin/kustomize
export YOLO_OFFLINE := 1

.PHONY: install demo serve chromium test test-unit test-faults soak lint format stack-up stack-down stack-status bench bench-gpu quantize-demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check inference runner scripts tests
	$(VENV)/bin/ruff format --check inference runner scripts tests
	$(VENV)/bin/mypy inference runner scripts

format: install
	$(VENV)/bin/ruff check --fix inference runner scripts tests
	$(VENV)/bin/ruff format inference runner scripts tests

test: lint $(KUSTOMIZE) chromium
	$(PY) -m pytest

test-unit: install $(KUSTOMIZE)
	$(PY) -m pytest tests/unit

test-faults: install
	$(PY) -m pytest -m faults

# Not in CI: the pipeline against its own 3-node Kafka cluster for SOAK_MINUTES (30) under faults
# drawn at random; SOAK_SEED=N replays a run's schedule. The report is appended to docs/reliability.md.
soak: install
	$(PY) -m scripts.soak

# The deploy/ tests run `kustomize build`; Go fetches it from its module proxy. Without Go that check skips.
KUSTOMIZE_VERSION := v5.7.1
$(KUSTOMIZE):
	@if command -v go >/dev/null; then \
		echo "go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) -> $@"; \
		GOBIN=$(CURDIR)/.cache/bin GOPATH=$(CURDIR)/.cache/go GOCACHE=$(CURDIR)/.cache/go/build \
			GOFLAGS="$$GOFLAGS -modcacherw" go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); \
	else echo "go not found: kustomize not installed, its deploy/ check will skip" >&2; fi

stack-up: install
	scripts/dev-stack up

stack-down: install
	scripts/dev-stack down

stack-status: install
	scripts/dev-stack status

# `make demo VIDEO=path/to/clip.mp4`: the same flow on your own clip (no ground truth, no score).
demo: install
	$(PY) -m scripts.demo $(if $(VIDEO),--video "$(VIDEO)")

# The INT8 demo model weights/best_int8_openvino_model and its report, from synthetic frames (no stack needed).
quantize-demo: install
	$(PY) -m scripts.quantize_demo

# The local stack, two workers and the console (`runner serve`) on http://127.0.0.1:8000 until Ctrl-C.
serve: install
	$(PY) -m scripts.demo --serve

# The console's browser test drives Debian's chromium (Playwright never downloads a browser here):
# installed with apt where that works (root, or sudo without a password); CI (CI=true) fails without it.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt=apt-get; \
		elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then apt="sudo -n apt-get"; fi; \
		if [ -n "$$apt" ]; then $$apt install -y chromium || { $$apt update && $$apt install -y chromium; }; \
		elif [ "$$CI" = true ]; then echo "CI needs $(CHROMIUM): apt-get install -y chromium" >&2; exit 1; \
		else echo "$(CHROMIUM) missing (apt-get install -y chromium): the console's browser test skips" >&2; fi; \
	fi

clean:
	scripts/dev-stack down || true
	rm -rf $(VENV) .dev-stack .cache

# e.g. `make bench BENCH_ARGS="--frames 400 --imgsz 640"` for YOLOv8n's usual input size.
BENCH_ARGS ?= --frames 400
bench: install
	$(PY) -m scripts.bench $(BENCH_ARGS)

# On a machine with an NVIDIA GPU: torch FP16 on CUDA, batches of 1, 8 and 32, one replica against two.
bench-gpu: install
	$(PY) -m scripts.bench --gpu --frames 2000 --imgsz 640 --json out/bench-gpu.json
