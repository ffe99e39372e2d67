"""The process-AGI script: one call, one process. Makes the same decision crmroute makes for the
benchmark's rule: ask the Custom CRM (HTTPS, the same contract) for the caller's Status, walk the
rows with crmroute's own comparison, and leave the same variables and jump on the channel.

    procagi_script.py RULE_JSON CA_PEM   (AGI environment on stdin, commands on stdout)
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

from crmroute.routing.compare import Operator, compare


def command(line: str) -> str:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return sys.stdin.readline()


def main() -> int:
    rule = json.loads(open(sys.argv[1]).read())
    env = {}
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            break
        name, _, value = line.partition(": ")
        env[name] = value
    caller = env.get("agi_callerid", "")
    context = ssl.create_default_context(cafile=sys.argv[2])
    query = urllib.parse.urlencode({"field_name": rule["crm_field"], "caller_id": caller})
    status, value, dest = "fallback", "", ("extension", rule["default_destination"])
    row_number = ""
    try:
        with urllib.request.urlopen(f"{rule['custom_url']}?{query}", timeout=rule["deadline_ms"] / 1000,
                                    context=context) as response:  # fmt: skip
            data = json.loads(response.read(65536) or b"null")
        value = str(data.get("value") or "") if isinstance(data, dict) else str(data or "")
        status = "default"
        for n, row in enumerate(rule["rows"], 1):
            if compare(value, Operator(row["operator"]), row["value"]):
                status, dest, row_number = "matched", (row["destination"], row["option"]), str(n)
                break
    except (urllib.error.URLError, OSError, ValueError):
        pass
    variables = {"CRMROUTE_STATUS": status, "CRMROUTE_DEST_TYPE": dest[0], "CRMROUTE_DEST": dest[1],
                 "CRMROUTE_VALUE": value, "CRMROUTE_RULE": rule["name"], "CRMROUTE_ROW": row_number}  # fmt: skip
    for name, text in variables.items():
        command(f'SET VARIABLE {name} "{text}"')
    command(f"SET CONTEXT crmroute-{dest[0]}")
    command(f"SET EXTENSION {dest[1]}")
    command("SET PRIORITY 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
