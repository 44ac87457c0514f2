# The README's two commands are `make demo` and `make test`; everything depends on `install`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KUSTOMIZE := .cache/bin/kustomize
export YOLO_OFFLINE := 1

.PHONY: install demo test test-unit test-faults lint format stack-up stack-down stack-status bench clean

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

test: lint $(KUSTOMIZE)
	$(PY) -m pytest

test-unit: install $(KUSTOMIZE)
	$(PY) -m pytest tests/unit

test-faults: install
	$(PY) -m pytest -m faults

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

demo: install
	$(PY) -m scripts.demo

clean:
	scripts/dev-stack down || true
	rm -rf $(VENV) .dev-stack .cache

# e.g. `make bench BENCH_ARGS="--frames 400 --imgsz 640"` for YOLOv8n's usual input size.
BENCH_ARGS ?= --frames 400
bench: install
	$(PY) -m scripts.bench $(BENCH_ARGS)
