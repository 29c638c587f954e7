"""Verifies captured edgejobs webhook deliveries with the reference Python library of the
Standard Webhooks specification (`standardwebhooks`), not with our own code.

Reads one JSON object on stdin: {"secret": "whsec_...", "deliveries": [{"headers": {...},
"body": "..."}]} and prints one JSON line: {"verified": [true|false, ...], "ids": [...]},
where each id is the `webhook-id` the library accepted (null when it refused the delivery).
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    req = json.load(sys.stdin)
    hook = Webhook(req["secret"])
    verified, ids = [], []
    for d in req["deliveries"]:
        try:
            hook.verify(d["body"], d["headers"])
        except WebhookVerificationError:
            verified.append(False)
            ids.append(None)
            continue
        verified.append(True)
        ids.append(d["headers"].get("webhook-id"))
    print(json.dumps({"verified": verified, "ids": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
