# Two commands do all the set-up on a fresh machine:
#   make app    virtual environment + requirements + embedded data, then the dashboard
#   make test   the same set-up, then the linter (ruff) and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: app test setup bench-data clean checkpoints

$(STAMP): requirements.txt requirements-dev.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run streamlit_app.py --server.port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench-data: $(STAMP)
	$(BIN)/python scripts/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache

# The shipped run directories on the embedded ML-100K (each run.json records the command that made it).
CKPT := checkpoints
TRAIN := $(BIN)/python scripts/train.py --quiet
checkpoints: $(STAMP)
	rm -rf $(CKPT)/*/
	$(TRAIN) --model global-mean --objective rating
	$(TRAIN) --model bias --objective rating
	$(TRAIN) --model ncf --config configs/ncf-rating.yaml
	$(TRAIN) --model popular
	$(TRAIN) --model popular --set mask_seen=true
	$(TRAIN) --model ncf --config configs/ncf-ranking.yaml
	$(TRAIN) --model ncf --config configs/ncf-ranking.yaml --set mask_seen=true
	$(TRAIN) --model ss4rec --config configs/ss4rec.yaml --set max_len=50 --epochs 40
	$(BIN)/python scripts/evaluate.py --run $(CKPT)/ss4rec-ranking-ml-100k-len50-seed0 --set mask_seen=true
	$(TRAIN) --model ss4rec --config configs/ss4rec.yaml --set max_len=200 --epochs 100
