"""The support story through the official Python server SDK (PyPI appwrite 27.0.0).

Run by support.test.mjs with MFA_ENDPOINT, MFA_PROJECT, MFA_KEY (an API key secret with
users.read and users.write) and MFA_EMAIL (a user with an authenticator and MFA on, signed
in). Finds the user by email, reads their factors, removes the authenticator, switches MFA
off, ends their sessions and reads their log; fails on anything unexpected, and prints what
it did as one JSON line. The SDK has no method for a user's logs: they are read through the
SDK's own client (`Client.call`), with the same key.
"""

import json
import os
import sys

from appwrite.client import Client
from appwrite.enums.authenticator_type import AuthenticatorType
from appwrite.exception import AppwriteException
from appwrite.query import Query
from appwrite.services.users import Users


def main() -> None:
    client = Client()
    client.set_endpoint(os.environ["MFA_ENDPOINT"])
    client.set_project(os.environ["MFA_PROJECT"])
    client.set_key(os.environ["MFA_KEY"])
    users = Users(client)
    email = os.environ["MFA_EMAIL"]

    found = users.list(queries=[Query.equal("email", [email])])
    assert found.total == 1, found
    user = found.users[0]
    assert user.email == email and user.mfa is True, user
    assert user.password is None and user.hash is None, "no password hash in the model"

    assert users.list_mfa_factors(user_id=user.id).totp is True
    assert users.list_sessions(user_id=user.id).total == 2

    users.delete_mfa_authenticator(user_id=user.id, type=AuthenticatorType.TOTP)
    assert users.list_mfa_factors(user_id=user.id).totp is False
    assert users.update_mfa(user_id=user.id, mfa=False).mfa is False
    users.delete_sessions(user_id=user.id)
    assert users.list_sessions(user_id=user.id).total == 0

    try:
        users.list()
        raise AssertionError("listing every user must be refused")
    except AppwriteException as e:
        assert (e.code, e.type) == (400, "general_query_invalid"), (e.code, e.type)

    logs = client.call(
        "get",
        f"/users/{user.id}/logs",
        {"X-Appwrite-Project": client.get_config("project"), "accept": "application/json"},
        {"queries": [Query.limit(3)]},
    )
    events = [log["event"] for log in logs["logs"]]
    assert all(log["mode"] == "admin" and log["keyId"] for log in logs["logs"]), logs
    print(json.dumps({"userId": user.id, "events": events}))


if __name__ == "__main__":
    try:
        main()
    except AppwriteException as e:
        print(f"AppwriteException {e.code} {e.type}: {e.message}", file=sys.stderr)
        sys.exit(1)
