import shutil
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

DISTRIBUTION = "flashattn_ort"
EXECUTABLE = "flashattn-ort"


def cli_path() -> str:
    """Absolute path of the `flashattn-ort` executable installed with this package (pip records where it
    put it, whatever the install scheme); `flashattn-ort` on PATH as a last resort."""
    try:
        files = distribution(DISTRIBUTION).files or []
    except PackageNotFoundError:
        files = []
    for f in files:
        if f.name == EXECUTABLE and Path(f.locate()).is_file():
            return str(Path(f.locate()).resolve())
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise FileNotFoundError(f"the {EXECUTABLE} executable is not installed: reinstall the flashattn-ort wheel")
    return found
