# The two commands of the README.
PYTHON ?= python3

.PHONY: demo test install-test
demo:
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[mqtt]"
	$(PYTHON) -m tools.hub_cli demo

install-test:
	bash tests/setup/install.sh

test: install-test
	$(PYTHON) -m pytest -q -ra
