# Two commands do all set-up on a machine with only python3: `make book` and `make test`.
# Both create .venv and install the pinned dependencies on first use.

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
NBVAL   := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: book pdf slides test native crosscheck rerun figures bench clean distclean

# Reproducibility (README, "Reproducibility"): nbval re-executes every notebook; a printed
# estimate "value ± error" must agree with the stored one within its error bars
# (tests/nbval_errorbars.py), every other character exactly. Nothing is pinned: the notebooks
# run with this machine's own kernels, as they do for a reader. `make crosscheck` runs them
# again with the kernels another CPU would use: MKL's AVX2 code path (an Intel CPU without
# AVX-512; MKL ignores it on other vendors' CPUs), ATen without vector extensions, one thread
# (the last two change the last bits of products or activations on any x86-64 CPU), so a
# number that depends on the CPU and carries no error bar fails here, not on a reader's machine.
OTHER_CPU := MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# Bytecode: pip would compile all 13,250 modules of the environment, on one core (about 50 s);
# instead Python writes each module's .pyc the first time a process imports it, and every later
# process (each notebook's kernel) reads it. That needs bytecode writing on, which some
# environments switch off (PYTHONDONTWRITEBYTECODE): without .pyc files every process would
# compile torch again (13 s instead of 5 per import).
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e ".[test]"
	touch $(STAMP)

## book: build the HTML book into _build/html (strict: any warning fails the build)
book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open _build/html/index.html in a browser."

## pdf: the whole book as one PDF, _build/latex/chaosgrad-book.pdf: Sphinx's LaTeX builder, the
## vector figures of `make figures` in place of the stored PNGs (exported first where missing;
## DRAFT=1 keeps the PNGs), then XeLaTeX (needs TeX Live: see README, "The book on paper")
pdf: $(STAMP)
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null || { echo "make pdf needs xelatex and latexmk: apt-get install texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-lang-chinese latexmk fonts-noto-cjk fonts-dejavu-core"; exit 2; }
	$(BIN)/jupyter-book build . --builder latex
	$(BIN)/python tools/vector_figures.py $(if $(DRAFT),--draft)
	$(MAKE) -C _build/latex all-pdf
	@echo "PDF: _build/latex/chaosgrad-book.pdf"

## slides: the defence deck (Beamer, XeLaTeX), _build/slides/defence-slides.pdf with pdfpc notes; `make slides
## LANG=zh`: the Chinese deck, defence-slides-zh.pdf. Numbers and charts are read from the stored outputs
## (tools/build_slides.py); no notebook runs. (LANG names the deck's language only when it is `zh`: the
## locale variable of the same name is reset for the build.)
slides: $(STAMP)
	env LANG=C.UTF-8 $(BIN)/python tools/build_slides.py --lang $(if $(filter zh,$(LANG)),zh,en)

## test: unit tests, doctests, nbval over every notebook (twice: this CPU, another CPU's kernels), guards, strict book build
## (the two passes run side by side: most of a notebook's time is single-threaded Python; idle
## OpenMP threads sleep instead of spinning, so that neither pass eats the other's core)
## (this machine's speed, on one thread and on all, is printed before and after: benchmarks/machine_speed.py)
test: $(STAMP)
	@$(BIN)/python benchmarks/machine_speed.py before the tests
	OMP_WAIT_POLICY=PASSIVE $(MAKE) --no-print-directory -j2 --output-sync=target native crosscheck
	@$(BIN)/python benchmarks/machine_speed.py after the tests

# Two of the slowest unit-test files run in the crosscheck pass instead of the native one, so
# that the two passes of `make test` take about the same time (tests must pass on any CPU);
# these two cost no more with the other CPU's kernels (test_lyapunov would cost twice as much).
CROSS_TESTS := tests/test_networks.py tests/test_adjoint.py

## native: unit tests (but CROSS_TESTS), doctests, guards, strict book build and nbval with this machine's kernels
native: $(STAMP)
	$(BIN)/python -m pytest tests book lib/chaosgrad --doctest-modules $(NBVAL) $(addprefix --ignore=,$(CROSS_TESTS))

## crosscheck: nbval over every notebook with the kernels of another CPU (see OTHER_CPU), and CROSS_TESTS
crosscheck: $(STAMP)
	env $(OTHER_CPU) $(BIN)/python -m pytest $(CROSS_TESTS) book -p no:cacheprovider $(NBVAL)

## rerun NB=book/<chapter>.ipynb: re-execute one notebook in place, top to bottom, then rebuild
rerun: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make rerun NB=book/<chapter>.ipynb"; exit 2; }
	@test -f "$(NB)" || { echo "no such notebook: $(NB)"; exit 2; }
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1200 "$(NB)"
	$(MAKE) book

## figures: every figure of the book as vector PDF and 300-dpi PNG, _build/figures/<chapter>-<name>.*
## (re-executes the notebooks; fails on a figure without a name, a legend under 9 pt or over data)
figures: $(STAMP)
	$(BIN)/python tools/export_figures.py --out _build/figures

## bench: performance ratios measured on this machine (never asserted in tests)
bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do $(BIN)/python "$$f" || exit 1; done

clean:
	rm -rf _build .pytest_cache

distclean: clean
	rm -rf $(VENV)
