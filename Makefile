# The two commands the README opens with: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test install install-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# torch first, pinned, so the CPU build is used instead of a multi-GB CUDA one.
install-dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,huggingface]'

demo: install
	$(BIN)/tgrag ingest ingest/samples/telegram_export
	@echo
	@echo "Search from another terminal:"
	@echo "  curl -s 'http://127.0.0.1:8000/search?q=%D0%BF%D0%BE%D0%B2%D1%8B%D1%88%D0%B5%D0%BD%D0%B8%D0%B5+%D0%BA%D0%BB%D1%8E%D1%87%D0%B5%D0%B2%D0%BE%D0%B9+%D1%81%D1%82%D0%B0%D0%B2%D0%BA%D0%B8&k=3'"
	@echo "  (the query is 'повышение ключевой ставки')"
	@echo
	$(BIN)/tgrag serve --host 127.0.0.1 --port 8000

test: install-dev
	$(BIN)/ruff check .
	@# pytest exits 5 when it collected no test: that is a failure here.
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no tests"; exit 1; fi; exit $$rc

lint: $(BIN)/python
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) data
