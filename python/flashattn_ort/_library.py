from pathlib import Path

LIBRARY_NAME = "libflashattn_ort.so"


def get_library_path() -> str:
    """Absolute path of the custom-op library, for `SessionOptions.register_custom_ops_library`."""
    path = Path(__file__).resolve().parent / LIBRARY_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the flashattn-ort wheel")
    return str(path)
