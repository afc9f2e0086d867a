# The two commands of the README.
PYTHON ?= python3

.PHONY: demo test install-test lint
demo:
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[mqtt]" --config-settings editable_mode=compat
	$(PYTHON) -m tools.hub_cli demo

install-test:
	bash tests/setup/install.sh

test: install-test
	$(PYTHON) -m pytest -q -ra

# The linter (a small rule set, pyproject.toml) and the walls between the rooms (.importlinter).
lint: install-test
	$(PYTHON) -m ruff check .
	$(PYTHON) -c 'import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())'
