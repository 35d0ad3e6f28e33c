# Two commands do all set-up on a machine with only python3: `make book` and `make test`.
# Both create .venv and install the pinned dependencies on first use.

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
NBVAL   := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: book test rerun bench clean distclean

# Chaotic orbits amplify a difference in the last bit until it shows in the printed digits,
# and MKL and ATen pick different kernels (AVX-512 or AVX2) on different x86 CPUs. Pinning
# both to their AVX2 code paths makes every stored output reproduce bit for bit on any
# x86-64 machine with AVX2, whatever its thread count. Benchmarks run unpinned.
book test rerun: export MKL_CBWR = AVX2
book test rerun: export ATEN_CPU_CAPABILITY = avx2

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

## book: build the HTML book into _build/html (strict: any warning fails the build)
book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open _build/html/index.html in a browser."

## test: unit tests, doctests, strict nbval over every notebook, notebook guards, strict book build
test: $(STAMP)
	$(BIN)/python -m pytest tests book lib/chaosgrad --doctest-modules $(NBVAL)

## rerun NB=book/<chapter>.ipynb: re-execute one notebook in place, top to bottom, then rebuild
rerun: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make rerun NB=book/<chapter>.ipynb"; exit 2; }
	@test -f "$(NB)" || { echo "no such notebook: $(NB)"; exit 2; }
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1200 "$(NB)"
	$(MAKE) book

## bench: performance ratios measured on this machine (never asserted in tests)
bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do $(BIN)/python "$$f" || exit 1; done

clean:
	rm -rf _build .pytest_cache

distclean: clean
	rm -rf $(VENV)
