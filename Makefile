# Two entry points: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench system-deps clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# the request path compiled by mypyc, which `llm-router serve` runs on (plain Python where it cannot be built)
	$(VENV)/bin/llm-router compile || echo "note: no compiled build; llm-router serve runs plain Python"
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests use for real peers (redis-server; nginx with its Lua module, the engine APISIX runs on),
# benchmarks (wrk) and the check that the committed flatbuffers code is what flatc generates (flatbuffers-compiler).
DEBS = redis-server wrk flatbuffers-compiler nginx-light libnginx-mod-http-lua
system-deps:
	@if command -v redis-server >/dev/null && command -v wrk >/dev/null && command -v flatc >/dev/null \
		&& [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	else echo "note: install $(DEBS) (Debian packages) to run every test"; fi

demo: $(STAMP)
	$(VENV)/bin/llm-router demo

test: $(STAMP) system-deps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m llm_router.bench.decision

clean:
	rm -rf $(VENV) build *.egg-info
