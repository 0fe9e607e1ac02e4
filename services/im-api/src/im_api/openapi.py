"""The OpenAPI document of im-api as committed in contracts/generated/openapi.json (`make contracts`).

Clients generate their HTTP types from it (clients/js), so it is part of the contract: a change to
a route or schema that is not regenerated fails tests/contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from im_contracts.schema import GENERATED_DIR

from .app import create_app
from .settings import ApiSettings

PATH = "openapi.json"


def document() -> dict:
    # A placeholder secret: the document does not depend on it, but the app refuses to build without one.
    app = create_app(ApiSettings(jwt_secret="openapi-export-only-0000"))
    return app.openapi()


def rendered() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = (Path(sys.argv[1]) if len(sys.argv) > 1 else GENERATED_DIR) / PATH
    target.write_text(rendered())
    print(target)
