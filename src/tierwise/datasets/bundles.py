"""Multi-file datasets (RouteLLM MMLU, RouterBench, RouterDC), pinned file by file.

Each file is pinned twice: by the source repository's commit in its URL and by its sha256
(computed from the copies described in the shared data README). A bundle is found in a
local copy laid out like that folder (``--data-dir``) or downloaded once into the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tierwise.datasets.fetch import dataset_file
from tierwise.datasets.registry import ROUTELLM_GSM8K
from tierwise.errors import DatasetError

FileProgress = Callable[[str, int, int | None], None]
"""Called with (file name, bytes so far, total bytes or None) while downloading."""


class DatasetFile(BaseModel):
    """One pinned file of a bundle."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Unique and file-system safe: names the cached copy."""
    url: str
    sha256: str
    local_path: str
    """The file's path inside a local copy of the data folder."""


class DatasetBundle(BaseModel):
    """A dataset made of several pinned files; ``role`` tags say what each file is."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    files: dict[str, DatasetFile]
    """role (e.g. ``responses/mmlu_anatomy.csv``) -> file."""
    models: dict[str, str]
    """Dataset model name -> catalog id (models the catalog does not know keep their name)."""

    def paths(
        self, *, data_dir: Path | None, cache_dir: Path, progress: FileProgress | None = None
    ) -> dict[str, Path]:
        """Every file verified and local: from ``data_dir``, else the cache (downloaded once)."""
        found: dict[str, Path] = {}
        for role, pinned in self.files.items():

            def tick(done: int, total: int | None, name: str = role) -> None:
                if progress:
                    progress(name, done, total)

            found[role] = dataset_file(
                pinned, data_dir=data_dir, cache_dir=cache_dir, progress=tick
            )
        return found


_ROUTELLM = (
    "https://raw.githubusercontent.com/lm-sys/RouteLLM/0b64fdafe049e596a3f5657c219329f24af24198"
)
_ROUTERDC = (
    "https://raw.githubusercontent.com/shuhao02/RouterDC/0e63989c5bf4363330b8a4616386e3f7f116d9f8"
)

_MMLU_SHA256 = """
67e564eea42e71fbfcaf616972df952c316e5538376da1c16d691177458b96b9 abstract_algebra
53ebea8257805eeecc25713728264b8235cffad7b720962a3eafc92fd27ef537 anatomy
49915ece9dfe8aadbd351f221ada2ea86b6f832ce49fa64d1622a0f066c19794 astronomy
13a45bed754ffe8f0e7f0348e69085c648a1ae0e91aa76cd5e6906fa45f7ec8e business_ethics
5ea37709bfbad4df7a3fcbd8973413f7645a2adfef9772490f09d3f293ffe882 clinical_knowledge
c38620db5b9f6f1b0fde7bc8d8299b8e2305c4dacbb1567c904cd51618d627d5 college_biology
78ca6ba22ff25c8fdb93e1c6e84384e72522106c73ed5ee9fed620928ce395ce college_chemistry
8a7b2a87a36b428c9d1a8f12ce3b01cf7920f0a7146d6f8a111da6749c332da3 college_computer_science
3f22f42779c48509c66e21d7d1fc3054eb0256c1b5b772bb6d9a3af1b253238b college_mathematics
63d71d29e630fc6538e1705a51f4267bdbbdea0fa7ee85056ad7d6f8f10d3987 college_medicine
8162a0660d4ef7b963088e0a176d4b8630096127a0d0b5ed003f649cbad34455 college_physics
26446faf7460f03aa2d82a05c170faedb5cbf6d7bdda133b1146229107097d1c computer_security
ea40473704b64cb60d564ffe91962848ec6fc3106b40089d08cebc98d5c7226d conceptual_physics
927b4d877cec8697f3b8378bb7e7c7a279babaea2edacf350ea50908701907b9 econometrics
de2fb7c2e9addb4808f5b3f7c79efbfdfb86216235bb7dc28ab70bc53664f11e electrical_engineering
88697ff0d238b5852c7a959379dc8b0b45c3554ed4b2ee7cbb7ffc34e06c7cf5 elementary_mathematics
094a462626468569ad595c03e66e73a299188cfa175248b499dba94e005506e6 formal_logic
6f75ddf7d6eb94ac0471529a85ff7f8b738c9f4055185b3114eed26393222d06 global_facts
444982fc2c750ab8cbc6942a0c0267040aa5023c1d2364247d20e2a28b4e325d high_school_biology
ae5e62479365dcd056354c568f60da65b1df9f1de57dda3953a8e9933a6f12e4 high_school_chemistry
d156d9448a6e899f7f976a0afac148a928bf709a2baa573f0c407854a25bdb11 high_school_computer_science
c64afd6c5e30ef0cd5c10beab961ac05e7ba55d6b48cd93bf6ad0a45f90515bf high_school_european_history
21b12044be4a6b9813880ad46372006dc0846e7f85fa46883bb73dbd90fba30a high_school_geography
2791689acc61775a5857f4f3a5fd248d30552553c3a96f6ee63dc28285437259 high_school_government_and_politics
73b931a2a06ba74a5c9f1e005d45a25004e36be5d075d98f8ebcf89b3fda367b high_school_macroeconomics
151b2a736981b7b20f3bad99de6a573e4692d68cf87020e943b601b70bb37390 high_school_mathematics
f7ea151efb4c9d96374db3358ac7e97e4d8349e26715f61dac98bc9d854ca046 high_school_microeconomics
1e2103fc8f7f1cfac7c00952b26db2418acab092486af78a9c51c551ae2ff9be high_school_physics
d11604f2c7a2425258d5b9a285ef71737c011cc3a91456890f088a0ee4c55212 high_school_psychology
de6642bcd93d7a80e7bbd73d987a44d67b6e537b47749ddc518122fd582703bb high_school_statistics
a71186d143363e203b2f216d78c9d21f10cca51de455ef176c9c01b77f546592 high_school_us_history
e9c52305977dc37b3e48eee727ad933b2d24d96ca3a06aec865a8900b1e87d2c high_school_world_history
0d6c4109b4f61f138781ce50bbc60ff2e90dd451694d3926a088be5a5bd88aa8 human_aging
20916037e3012731883f926738daf47ed994f74ba25518fdb7f0df72a81143fd human_sexuality
e389b886e3e1570bfdf798f6f56dc3c675350200c5baf0f41a0766294ff312eb international_law
7e94c3849231be7b2654db11e44ee51531f8474e300fe83b1e05438df3038f0b jurisprudence
fa2d94cd2e901621aaebd0a7e64560b5dbbe4249086795398533eed2561c0c1e logical_fallacies
9301e928481be6e20b3541e1ac112b25a4a71338b21592978c0d219cb6240020 machine_learning
a00b12ab0265918f9335a85ce02303ddaea0491a7b099f88a05986eeac4aa4fb management
3ee0b6560ebe0eb4f14ce63227d6f6ec8cb8b6e57e345eae9460be742672f36c marketing
7c830f87dcbc0029137b3400cf361931831cb57dda55717a64e72ad74663d5df medical_genetics
c2e1a5b0394a8429f55b6340e1865166ac17ec6b3571523005e413b3b2843b9f miscellaneous
8b2b973b1987b724f39fd10970604d7f1150747a0db9ce766c193bd978c9d0c4 moral_disputes
78ded6fdca1cd0d5c4ed16a5ed4aebf2e98401b9c00b20e565e6cce5bf1153c7 moral_scenarios
ba197fbf4b6c5034414d66ea7747211056cf5f709f83d919d2d856245720cc51 nutrition
2f30ad01ab529ddea00dff4ff87e950fef838a78754c94f6884120628a7d0591 philosophy
afc816d4b78814627bae9b8c3730a9bb72bd958ff6259fd36c981777cfe83753 prehistory
fe5ee976a625832ecf624086103619523d063a3a728c60681b6a53c55b638a37 professional_accounting
60a4308df4f481ff8840590b29061835207b50a9f06a9fc68baf12b114f7e2e0 professional_law
6fda30b523e4e2ce8b1f18e871a0722190a4ac81ec377a75fbba4a63e0b510f7 professional_medicine
bfb3a7fb653e2b195d3fa258894af64d3f1c3dbd4059c1e0feb728131d20f9b3 professional_psychology
2196279ea2535fbda62509c3156209b764459a3d515a9ba84b69cf16bb4c27d0 public_relations
1354bb17649f95b7dd8ef3179e22329abe6bef84e639d63370ae9e80b2509905 security_studies
903ba6259b13f2877607abef22b7b19cb575104268d4ced615e3129d3caafb47 sociology
f1c1d266753a3f161e2018c16c6948fb78c7f5e506a10b4fc0441049962a6c69 us_foreign_policy
d525f1ba88982befd42140e73822fe940e73db82bbdcdd569d95f26c3dd41e68 virology
49dc00d44e069ecaac6a7f7e2188f4a8bce5df56ee91bb15f55519d07f64af8e world_religions
"""
"""sha256 and subject of ``routellm/evals/mmlu/responses/mmlu_<subject>.csv``."""

_ROUTERBENCH_SHA256 = """
7bffb55faca2e1f9d19f7197c652884780a1e0f7fe14bad5b2b1c6afbe7a6769 arc_challenge_test.csv
59e044850520be06f74dd9766b9ab4621d783f7fa5269d7dda118b9abb115d78 arc_challenge_train.csv
156fb843b706b765162d74f5fc4928322be5041791b45bd3e1bd732d998c4032 mbpp_test.csv
2a985adc3a3016b5ae4d62229722cdff9ece58aa1338206a6b12e4957304452b mbpp_train.csv
de7c8689d4b682c860b660988808ee2e40366b12076811e7891081facec4a2e1 winograde_test.csv
f6d54caab59bebb9facf3407c515a07a20faf4e75c639b7e91988ceaf312906a winograde_train.csv
"""
"""sha256 and name of ``datasets/routerbench_zs/<name>`` (RouterDC's RouterBench slice)."""

_ROUTERDC_SHA256 = """
3cb750eaa93bd9989babca64b22e92ad51b0b5c30f6ee11dc539fb949c9cf5be MATH_prealgebra.json
7588fd22f8d7e9adb9ec6ff435a0d3612a56b3192dc3f9ace358c2468a10b1f3 arc_challenge_test.json
5ec50e9cd61caf0e3f116b48d00996a3d88ee52b3a0f04797cdfde8e21f8b610 arc_challenge_train.json
f8ba3041a394d865aeca8a5554c63f302649563f9cac9bbee8512b2d686269c7 arc_easy_test.json
25bc2be5a33afbdf950466ad34f388b6ede63e59d7139a916c0dd7be649ccfae arc_easy_train.json
237ccfe4a613a523e48ac92709ddc1a541674c332f9064899cce2cb1dafac3c9 gsm8k-test.json
63528cfd7b1860f03bae35e16d4964fe61d4abd3133386c92b22f433a4d4cd75 gsm8k-train.json
3744fba4a7953206858f601e61b05c1551ca2fbcfac6b14b46fd19e8735f5f68 humaneval_test.json
c98f4160c135bfb2e6ee21bed16e23a8e5700148c3ea6f49092ce64c5a8d8de0 humaneval_train.json
bfaad2257e7b0de6d4bd6c204e05e791998f8875bb157dde1aea39817c60376b javascript.json
17f2c23297234421e3e683ed5fc18d696cacb80a2d1e7a931ca12fcf52a2f9e7 mbpp.json
e560163c00f717a23da5781cf7b76a4050abed0cd75b2244df3fc23d46ea379b mmlu_test.json
f07315933421304572fde4a2751c131757a7a3913ad5dad302390d4ee00e5d7d mmlu_train.json
"""
"""sha256 and name of ``datasets/split2_model7/<name>`` (RouterDC's 7-model matrix)."""

_GSM8K_CONTAMINATED = "1f5a7be02148ee0f7f306d233ba76a6573c826cee9499a34f8ef938a1a84c234"
_MMLU_CONTAMINATED = "9606c968198eabf5efa46ccba31286392c8e35525d83c86661618ffc5ec6d40e"

ROUTELLM_MODELS = {
    "gpt-4-1106-preview": "openai:gpt-4-1106-preview",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "together:mistralai/Mixtral-8x7B-Instruct-v0.1",
}
ROUTERBENCH_MODELS = {
    "gpt-4-1106-preview": "openai:gpt-4-1106-preview",
    "mistralai/mixtral-8x7b-chat": "together:mistralai/Mixtral-8x7B-Instruct-v0.1",
}


def _pins(table: str) -> list[tuple[str, str]]:
    return [(name, sha) for sha, name in (line.split() for line in table.strip().splitlines())]


def _file(bundle: str, url: str, sha256: str, local_path: str) -> DatasetFile:
    return DatasetFile(
        name=f"{bundle}--{Path(local_path).name}", url=url, sha256=sha256, local_path=local_path
    )


def _routellm_gsm8k() -> DatasetBundle:
    name = "routellm-gsm8k"
    contaminated = "routellm_eval/gsm8k/contaminated_prompts.jsonl"
    files = {
        "responses": _file(
            name, ROUTELLM_GSM8K.url, ROUTELLM_GSM8K.sha256, ROUTELLM_GSM8K.local_path
        ),
        "contaminated": _file(
            name,
            f"{_ROUTELLM}/routellm/evals/gsm8k/contaminated_prompts.jsonl",
            _GSM8K_CONTAMINATED,
            contaminated,
        ),
    }
    return DatasetBundle(
        name=name, description=ROUTELLM_GSM8K.description, files=files, models=ROUTELLM_MODELS
    )


def _routellm_mmlu() -> DatasetBundle:
    name = "routellm-mmlu"
    files = {
        f"responses/mmlu_{subject}.csv": _file(
            name,
            f"{_ROUTELLM}/routellm/evals/mmlu/responses/mmlu_{subject}.csv",
            sha,
            f"routellm_eval/mmlu/responses/mmlu_{subject}.csv",
        )
        for subject, sha in _pins(_MMLU_SHA256)
    }
    files["contaminated"] = _file(
        name,
        f"{_ROUTELLM}/routellm/evals/mmlu/contaminated_prompts.jsonl",
        _MMLU_CONTAMINATED,
        "routellm_eval/mmlu/contaminated_prompts.jsonl",
    )
    return DatasetBundle(
        name=name,
        description="MMLU (57 subjects, 14,042 prompts) answered by GPT-4 Turbo and Mixtral "
        "8x7B, correctness only (lm-sys/RouteLLM, Apache-2.0)",
        files=files,
        models=ROUTELLM_MODELS,
    )


def _routerbench() -> DatasetBundle:
    name = "routerbench"
    files = {
        file: _file(
            name,
            f"{_ROUTERDC}/datasets/routerbench_zs/{file}",
            sha,
            f"routerbench_subset_routerdc/{file}",
        )
        for file, sha in _pins(_ROUTERBENCH_SHA256)
    }
    return DatasetBundle(
        name=name,
        description="RouterBench slice (ARC-Challenge, MBPP, Winogrande; 3,164 prompts) "
        "answered by 11 models, with USD cost per call (RouterDC's train/test split)",
        files=files,
        models=ROUTERBENCH_MODELS,
    )


def _routerdc() -> DatasetBundle:
    name = "routerdc"
    files = {
        file: _file(
            name,
            f"{_ROUTERDC}/datasets/split2_model7/{file}",
            sha,
            f"routerdc_7b_models/{file}",
        )
        for file, sha in _pins(_ROUTERDC_SHA256)
    }
    return DatasetBundle(
        name=name,
        description="RouterDC's 7 open ~7B models on 8 benchmarks (~13.8k prompts), "
        "correctness-weighted scores and pass fractions; no costs",
        files=files,
        models={},
    )


_BUNDLES: dict[str, Callable[[], DatasetBundle]] = {
    "routellm-gsm8k": _routellm_gsm8k,
    "routellm-mmlu": _routellm_mmlu,
    "routerbench": _routerbench,
    "routerdc": _routerdc,
}


def bundle_names() -> list[str]:
    return sorted(_BUNDLES)


def get_bundle(name: str) -> DatasetBundle:
    if name not in _BUNDLES:
        known = ", ".join(bundle_names())
        raise DatasetError(f"unknown dataset {name!r} (known: {known}, or a path)")
    return _BUNDLES[name]()
