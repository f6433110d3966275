"""Print the Ray requirement of pyproject.toml and its lower bound: `>=2.50.1,<2.61 2.50.1`."""
import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
(spec,) = [re.sub(r"^ray(\[[^]]*\])?", "", d) for d in project["dependencies"] if re.match(r"ray\b", d)]
(lowest,) = re.findall(r">=\s*([\d.]+)", spec)
print(spec.replace(" ", ""), lowest)
