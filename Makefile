# Everything a new user needs, from a clone with only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
INBOX  ?= inbox
OUTPUT ?= downloads
ARGS   ?=

.PHONY: run test lint install install-service test-systemd bench clean

# The runtime environment: the project and its dependencies, nothing more.
$(BIN)/imgdl-watch: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test environment adds the dev extras; the stamp remembers that it is done.
$(VENV)/.dev-installed: pyproject.toml $(BIN)/imgdl-watch
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/imgdl-watch
	$(BIN)/imgdl-watch run --inbox $(INBOX) --output $(OUTPUT) $(ARGS)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Installs the command for the current user, outside any virtual environment.
install:
	$(PYTHON) -m pip install .

# As root: the service, its user and folders, and an example config.
# DESTDIR stages the files elsewhere (packaging); only a real install runs
# systemd-sysusers, systemd-tmpfiles and daemon-reload.
SERVICE_VENV ?= /opt/imgdl-watch
install-service:
	@test "$$(id -u)" = 0 || { echo "install-service: run as root: sudo make install-service" >&2; exit 2; }
	$(PYTHON) -m venv $(DESTDIR)$(SERVICE_VENV)
	@# The service runs as its own user: an interpreter under a private home
	@# (pyenv's, in a 0700 /root) would fail to start with 203/EXEC.
	@[ -n "$(DESTDIR)" ] || ! command -v runuser >/dev/null || runuser -u nobody -- $(DESTDIR)$(SERVICE_VENV)/bin/python -c '' 2>/dev/null || \
		{ echo "install-service: other users cannot run $$(readlink -f $(DESTDIR)$(SERVICE_VENV)/bin/python), so the service could not either: run with PYTHON=/usr/bin/python3" >&2; rm -rf $(DESTDIR)$(SERVICE_VENV); exit 2; }
	$(DESTDIR)$(SERVICE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DESTDIR)$(SERVICE_VENV)/bin/python -m pip install --quiet .
	install -D -m 0644 systemd/imgdl-watch.service $(DESTDIR)/etc/systemd/system/imgdl-watch.service
	install -D -m 0644 systemd/imgdl-watch.sysusers $(DESTDIR)/etc/sysusers.d/imgdl-watch.conf
	install -D -m 0644 systemd/imgdl-watch.tmpfiles $(DESTDIR)/etc/tmpfiles.d/imgdl-watch.conf
	install -D -m 0644 systemd/imgdl-watch.logrotate $(DESTDIR)/etc/logrotate.d/imgdl-watch
	test -e $(DESTDIR)/etc/imgdl-watch/config.toml || \
		install -D -m 0644 systemd/config.toml.example $(DESTDIR)/etc/imgdl-watch/config.toml
	if [ -z "$(DESTDIR)" ]; then \
		systemd-sysusers /etc/sysusers.d/imgdl-watch.conf && \
		systemd-tmpfiles --create /etc/tmpfiles.d/imgdl-watch.conf && \
		{ [ ! -d /run/systemd/system ] || systemctl daemon-reload; }; \
	fi
	@echo "installed; now: systemctl enable --now imgdl-watch"

# As root: make install-service and the service under a real systemd, booted in
# a container on an overlay of / (tests/systemd/run.sh says how and what it
# checks). Exit 77, with one line saying why, where this machine cannot run it.
test-systemd:
	@bash tests/systemd/run.sh

# Benchmarks: Pillow for the corpus, in this environment only. nginx with the
# echo module, wget2, aria2c and curl are used when installed:
#   apt-get install nginx-light libnginx-mod-http-echo wget2 aria2 curl
$(VENV)/.bench-installed: pyproject.toml $(BIN)/imgdl-watch
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

# What the benchmark times: the product installed as a user gets it (`pip
# install .`, not editable), in its own environment, rebuilt when it changes.
PRODUCT := benchmarks/_work/product
$(PRODUCT)/bin/imgdl-watch: pyproject.toml $(shell find imgdl_watch -name "*.py")
	test -x $(PRODUCT)/bin/python || $(PYTHON) -m venv $(PRODUCT)
	$(PRODUCT)/bin/python -m pip install --quiet --upgrade pip
	$(PRODUCT)/bin/python -m pip install --quiet .
	touch $@

bench: $(VENV)/.bench-installed $(PRODUCT)/bin/imgdl-watch
	$(BIN)/python -m benchmarks.run --imgdl $(PRODUCT)/bin/imgdl-watch $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
