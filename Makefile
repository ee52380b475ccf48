# Two commands do all the set-up on a fresh machine:
#   make app    virtual environment + requirements + embedded data, then the dashboard
#   make test   the same set-up, then the linter (ruff), the type checker (mypy) and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= 127.0.0.1# this machine only; `make app ADDRESS=0.0.0.0` on a pod behind its proxy

.PHONY: app test test-fast setup bench-data clean checkpoints ablations rating

$(STAMP): requirements.txt requirements-dev.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run streamlit_app.py --server.port $(PORT) --server.address $(ADDRESS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# the fast tier while working (a few minutes; about one minute of CPU): everything but the tests marked slow (tests/conftest.py)
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow"

bench-data: $(STAMP)
	$(BIN)/python scripts/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache

# The shipped run directories on the embedded ML-100K (each run.json records the command that made it). Three seeds
# of every model with randomness; the closed-form floors are deterministic (one run each). About 2 h on 2 CPU
# cores (SEEDS=0 for one seed of each).
CKPT := checkpoints
TRAIN := $(BIN)/python scripts/train.py --quiet
EVAL := $(BIN)/python scripts/evaluate.py
SEEDS ?= 0 1 2
checkpoints: $(STAMP)
	rm -rf $(CKPT)/*/
	$(TRAIN) --model global-mean --objective rating
	$(TRAIN) --model bias --objective rating
	$(TRAIN) --model popular
	$(TRAIN) --model popular --set mask_seen=true
	$(TRAIN) --model markov --config configs/markov.yaml
	$(TRAIN) --model markov --config configs/markov.yaml --set mask_seen=true
	$(TRAIN) --model ncf --config configs/ncf-ranking.yaml --set mask_seen=true
	for s in $(SEEDS); do \
	  $(TRAIN) --model ncf --config configs/ncf-rating.yaml --seed $$s && \
	  $(TRAIN) --model ncf --config configs/ncf-ranking.yaml --seed $$s && \
	  for m in ss4rec sasrec gru4rec; do \
	    $(TRAIN) --model $$m --config configs/$$m.yaml --seed $$s || exit 1; \
	  done; \
	done
	for run in $(CKPT)/ss4rec-ranking-*-released-seed* $(CKPT)/sasrec-ranking-*-len50-seed* $(CKPT)/gru4rec-ranking-*-seed*; do \
	  $(EVAL) --run $$run --set mask_seen=true || exit 1; \
	done
	$(MAKE) ablations
	$(MAKE) rating

# Issue 12's ablations (the "What matters" page): SS4Rec's released recipe with one thing changed, and SASRec given
# SS4Rec's target-gap input, three seeds each. Adds to $(CKPT). One after another here; the shipped ones took 67 min
# on 2 CPU cores with two at a time.
SS4REC := $(TRAIN) --model ss4rec --config configs/ss4rec.yaml
ablations: $(STAMP)
	for s in $(SEEDS); do \
	  $(SS4REC) --seed $$s --set variant=no-target-time --set target_gap=withheld && \
	  $(SS4REC) --seed $$s --set variant=zero-gaps --set gap_ablation=zero && \
	  $(SS4REC) --seed $$s --set variant=shuffled-gaps --set gap_ablation=shuffled && \
	  $(SS4REC) --seed $$s --set variant=constant-gap --set gap_ablation=constant && \
	  $(SS4REC) --seed $$s --set variant=log1p-gaps --set time_transform=log1p && \
	  $(SS4REC) --seed $$s --set variant=span-normalised --set time_normalise=span && \
	  $(SS4REC) --seed $$s --set variant=s5-only --set blocks=s5 && \
	  $(SS4REC) --seed $$s --set variant=mamba-only --set blocks=mamba && \
	  $(TRAIN) --model sasrec --config configs/sasrec.yaml --seed $$s --set variant=sasrec-target-time \
	    --set target_gap_embedding=true || exit 1; \
	done

# Issue 13's rating runs (the Compare page's rating group, the answer page's rating verdict): the recent-residual floor,
# rating-aware SS4Rec and SASRec (configs/*-rating.yaml), SS4Rec's joint rating head (not rating-aware) selected
# on validation RMSE, and rating-aware SS4Rec without the time of the rating it predicts; three seeds each. Adds to
# $(CKPT). About 45 min of CPU (the shipped runs: 2-5 min each, one thread).
rating: $(STAMP)
	$(TRAIN) --model recent-residual --objective rating
	for s in $(SEEDS); do \
	  $(TRAIN) --model ss4rec --config configs/ss4rec-rating.yaml --seed $$s && \
	  $(TRAIN) --model sasrec --config configs/sasrec-rating.yaml --seed $$s && \
	  $(SS4REC) --seed $$s --objective rating --set rating_head=true --set variant=rating-head-rmse-epoch && \
	  $(TRAIN) --model ss4rec --config configs/ss4rec-rating.yaml --seed $$s --set target_gap=withheld \
	    --set variant=rating-aware-no-target-time || exit 1; \
	done
