"""The README's tour runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python block"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["trajectory"].shape == (5, 100)
    assert namespace["gradient"].shape == (100,)
    assert namespace["batch"].shape == (8, 200)
    costs = namespace["result"].history()["cost"]
    assert costs[-1] < costs[0]
    assert namespace["sensitivity"].shape == namespace["problem"].observations.shape
    assert namespace["observations"]["value"].dims == ("time", "sensor")


def test_readme_quick_start_has_exactly_two_commands():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert len(commands) == 1
    lines = [line for line in commands[0].splitlines() if line.strip()]
    assert lines == ['python -m pip install . && diffphys run', 'python -m pip install ".[test]" && python -m pytest']
