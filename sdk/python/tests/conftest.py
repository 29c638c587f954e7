"""Makes `import edgejobs` load this checkout's sdk/python/src, not an installed copy.

scripts/sdk-python sets EDGEJOBS_SDK_INSTALLED=1 when it runs tests against the wheel it
installed into a fresh virtualenv; then the path is left alone.
"""

import os
import sys
from pathlib import Path

if os.environ.get("EDGEJOBS_SDK_INSTALLED") != "1":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
