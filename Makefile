# Two entry points for a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
HW     := $(VENV)/bin/hardwire
OUT    ?= out

.PHONY: demo test test-slow setup setup-test clean

$(VENV)/.base: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# torch comes from the CPU wheel on local disk; it must be installed before anything that
# depends on it, or pip fetches a multi-GB CUDA build.
$(VENV)/.torch: $(VENV)/.base
	$(PY) -m pip install -q torch==2.13.0
	touch $@

$(VENV)/.test: $(VENV)/.torch
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.base
setup-test: $(VENV)/.test

# the demo trains a patch (docs/patch.md), which needs torch
demo: $(VENV)/.torch
	@mkdir -p $(OUT)
	@echo "== 1. import: the bundled stories260K checkpoint (llama2.c format)"
	$(HW) inspect
	@echo "== 2. run: greedy story from BOS on the float reference"
	$(HW) run --max-tokens 120
	@echo "== 3. freeze: 8-bit and mixed 3/6-bit dies, and what freezing costs"
	$(HW) freeze --plan w8 --force -o $(OUT)/stories260K-w8.die
	$(HW) freeze --plan 'mix:3g32-e4m4,6g32-e4m4,avg=3.5' --force -o $(OUT)/stories260K-mix36.die
	$(HW) inspect $(OUT)/stories260K-mix36.die
	$(HW) quality $(OUT)/stories260K-w8.die $(OUT)/stories260K-mix36.die --stories 100
	@echo "== 4. golden: the bit-exact integer model of the chip, on the 8-bit die, and the chip's time for it"
	$(HW) run $(OUT)/stories260K-w8.die --backend golden --max-tokens 60 --timing
	@echo "== 5. rtl: synthesizable Verilog of the 8-bit die (simulate it with: hardwire sim DIE --ids 1 -n 32)"
	$(HW) rtl $(OUT)/stories260K-w8.die -o $(OUT)/rtl-w8
	@echo "== 6. estimate: Llama 3.1 8B as Taalas HC1 built it, stories260K on a chip sized for it, and what HC1 costs against H100s"
	$(HW) estimate --preset llama-3.1-8b --chip hc1
	$(HW) estimate --preset stories260k
	$(HW) economics --preset llama-3.1-8b --gpu h100 --load 1e8
	@echo "== 7. time to correct: the small task model printed (chip clock) against the large one at a GPU rate"
	$(HW) freeze task-small --plan w8 --force -o $(OUT)/task-small-w8.die
	$(HW) ttc --tasks add:100 --system $(OUT)/task-small-w8.die@chip --system task-large@rate:8065:0.124 \
	  --attempts 16 --plot $(OUT)/ttc-add.png
	@echo "solved-versus-time plot: $(OUT)/ttc-add.png"
	@echo "== 8. patch: LoRA adapters in the chip's SRAM teach the frozen die a new name (a short run; docs/patch.md has the full one)"
	$(PY) examples/patch/make_data.py $(OUT)/stories260K-w8.die $(OUT)/patch-data
	$(HW) patch train $(OUT)/stories260K-w8.die --data $(OUT)/patch-data/name-train.jsonl --keep $(OUT)/patch-data/keep.jsonl \
	  --keep-weight 4 --steps 60 -o $(OUT)/name.patch --force
	$(HW) patch inspect $(OUT)/name.patch
	$(HW) run $(OUT)/stories260K-w8.die --backend golden --patch $(OUT)/name.patch -p "Once upon a time, there was a big bear named" -n 12
	@echo "== 9. report: the 8-bit die on one self-contained HTML page (open it in any browser)"
	$(HW) report $(OUT)/stories260K-w8.die -o $(OUT)/report.html

test: $(VENV)/.test
	$(PY) -m pytest -q -n 2; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-slow: $(VENV)/.test
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
