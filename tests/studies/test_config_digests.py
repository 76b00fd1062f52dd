"""The digests that key existing work dirs and adapter folders, pinned for every shipped config: a rename, a default
or a refactor of a config dataclass must never move them (a moved digest silently trains or computes anew)."""

from __future__ import annotations

from pathlib import Path

import pytest
from studies.base import short_hash
from studies.effectiveness.config import EffectivenessConfig
from studies.llm_training.config import LLMTrainingConfig, load_method_configs
from studies.llm_training.systems import Systems
from studies.r2r.config import R2RConfig
from studies.r2r.experts import expert_configs
from studies.r3ag.config import R3AGExperimentConfig

from routerank.r2r.trainer import ExpertConfig, default_expert_dir
from routerank.r2r.trainer import config_json as expert_json
from routerank.stages import read_toml_config
from routerank.train.dear import DeARConfig, default_out
from routerank.train.prorank import ProRankConfig, default_prorank_dir
from routerank.train.rank_r1 import RankR1Config, default_rank_r1_dir

ROOT = Path(__file__).resolve().parents[2]
WORK_DIRS = {  # config -> (work dir digest, hash of every expert's config record where the study trains experts)
    "studies/effectiveness/configs/effectiveness.toml": ("312c3abf40", None),
    "studies/r3ag/configs/r3ag-cpu.toml": ("ddec443d79", None),
    "studies/r3ag/configs/r3ag-gpu.toml": ("ec9f859d23", None),
    "studies/r2r/configs/r2r-ce-aila.toml": ("e8a70a16ab", "f285ac6cb6"),
    "studies/r2r/configs/r2r-ce-fulltest.toml": ("262bae9052", "bc96a86b8a"),
    "studies/r2r/configs/r2r-ce-quick.toml": ("082fb59c5d", "bc96a86b8a"),
    "studies/r2r/configs/r2r-ce.toml": ("f2c31148df", "c370aa608a"),
    "studies/r2r/configs/r2r-cpu.toml": ("0b953bfea7", "91af3171d7"),
    "studies/r2r/configs/r2r-gpu.toml": ("5af83961e9", "90bb73140e"),
}
TRAINER_DIRS = {  # the library's trainer configs -> their default run folder's name
    "configs/dear-cpu.toml": "dear-ce+ranknet+kl-823df64f17",
    "configs/dear-gpu.toml": "dear-ce+ranknet+kl-e8811d16ef",
    "configs/prorank-cpu.toml": "smollm2-a91b4f7d9e",
    "configs/prorank-gpu.toml": "smollm2-334ac66784",
    "configs/rank-r1-cpu.toml": "smollm2-ed8215b68a",
    "configs/rank-r1-gpu.toml": "smollm2-d0675918b2",
}
LLM_TRAINING = {  # profile -> hash of every trained system's folder (names hold their configs' hashes)
    "studies/llm_training/configs/llm-training-cpu.toml": "767d346d66",
    "studies/llm_training/configs/llm-training-gpu.toml": "7585fd3c5e",
}


@pytest.mark.parametrize("path", sorted(WORK_DIRS))
def test_study_work_dirs_keep_their_digests(path):
    digest, experts = WORK_DIRS[path]
    loader = {"effectiveness": EffectivenessConfig, "r3ag": R3AGExperimentConfig, "r2r": R2RConfig}
    config = loader[Path(path).parts[1]].load(ROOT / path)
    assert config.digest() == digest
    if experts is not None:
        assert short_hash({name: expert_json(c) for name, c in expert_configs(config).items()}) == experts


@pytest.mark.parametrize("path", sorted(TRAINER_DIRS))
def test_trainer_configs_keep_their_run_folders(path):
    full, zero = ROOT / path, ("max_queries",)  # read as `routerank train ...` reads them
    if full.name.startswith("dear"):
        folder = default_out(
            read_toml_config(DeARConfig, full, tuples=("datasets", "target_modules"), none_if_zero=zero)
        )
    elif full.name.startswith("prorank"):
        folder = default_prorank_dir(
            read_toml_config(ProRankConfig, full, tuples=("target_modules",), none_if_zero=zero)
        )
    else:
        folder = default_rank_r1_dir(
            read_toml_config(RankR1Config, full, tuples=("target_modules",), none_if_zero=zero)
        )
    assert Path(folder).name == TRAINER_DIRS[path]


@pytest.mark.parametrize("path", sorted(LLM_TRAINING))
def test_llm_training_systems_keep_their_folders(path):
    config = LLMTrainingConfig.load(ROOT / path)
    systems = Systems(config, load_method_configs(config), Path("/W"))
    folders = {}
    for system in systems.names():  # the untrained rows too: their answers are part of what is pinned
        folders[f"train_dir:{system}"] = str(systems.train_dir(system))
        folders[f"adapter_dir:{system}"] = str(systems.adapter_dir(system))
    folders |= {f"expert:{s}": expert_json(systems.expert_config(s)) for s in ("sft", "contrastive")}
    assert short_hash(folders) == LLM_TRAINING[path]


def test_an_expert_keeps_its_folder_under_either_name_of_its_objective():
    assert default_expert_dir(ExpertConfig("scifact", "medical")).name == "medical-f494c6416a"
    assert default_expert_dir(ExpertConfig("scifact", "medical", objective="contrastive")).name == "medical-f494c6416a"
    assert default_expert_dir(ExpertConfig("scifact", "medical", objective="sft")).name == "medical-1dd05d15c2"
    assert default_expert_dir(ExpertConfig("scifact", "medical", objective="bce")).name == "medical-1dd05d15c2"
