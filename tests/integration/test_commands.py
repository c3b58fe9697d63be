"""tests/integration/test_commands.py - commands back from dispatch: a dispatch system
acknowledges, assigns, comments on and resolves incidents by producing to the commands topic
(a librdkafka mock cluster in its own process, a real producer); iocd applies each as the API
would, refuses what does not apply, skips what is malformed, and applies a command_id once,
even when kill -9 makes it read the topic again."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, wait_for  # noqa: E402
from test_incidents import KAFKATOOL, MockKafka, by_incident, post_json  # noqa: E402

COMMANDS = "iocd.incident-commands"


def produce(k, *msgs):
    lines = "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in msgs)
    # Keyed by incident, as dispatch should: one incident's commands stay in one partition,
    # in order.
    p = subprocess.run([KAFKATOOL, "produce", k.bootstrap, COMMANDS, "incident-1"], input=lines,
                       capture_output=True, text=True, timeout=60)
    eq(p.stdout.strip(), "produced %d" % len(msgs), "produced (%s)" % p.stderr)


def incident(d, iid):
    return d.get("/api/v1/incidents/%d" % iid).json()["data"]


def commands(d, result):
    return metric(d.metrics(), "iocd_incident_commands_total", result=result)


def test_dispatch_acts_on_incidents_through_kafka():
    k = MockKafka()
    try:
        # The topic exists before iocd joins (a dispatch system has already written to it):
        # its first message is not a command at all.
        produce(k, "this is not json")
        with Daemon("--kafka-brokers", k.bootstrap) as d:
            d.start()
            d.wait_log(r"consuming incident commands")
            r = post_json(d, "/api/v1/incidents", {"domain": "water", "ward": "tan_thinh",
                                                   "description": "Vỡ ống nước", "severity":
                                                   "critical", "reporter": "hotline"})
            eq(r.status, 201, "report")
            iid = r.json()["data"]["id"]
            produce(k, {"id": iid, "action": "ack", "by": "dispatch-7", "note": "crew 3 sent",
                        "command_id": "c-1"},
                    {"id": iid, "action": "assign", "by": "dispatch-7", "to": "crew 3",
                     "command_id": "c-2"},
                    {"id": iid, "action": "comment", "by": "crew 3", "text": "valve closed"},
                    {"id": 999, "action": "resolve", "by": "dispatch-7", "reason": "x"},
                    {"id": iid, "action": "ack", "by": "dispatch-7", "command_id": "c-1"},
                    {"id": iid, "action": "explode", "by": "dispatch-7"},
                    {"id": iid, "action": "assign", "by": "dispatch-7"})
            wait_for(lambda: commands(d, "applied") == 3, timeout=60,
                     what="three commands applied")
            wait_for(lambda: commands(d, "refused") == 2 and commands(d, "invalid") == 3,
                     what="two refused (no incident 999; c-1 again), three malformed")
            inc = incident(d, iid)
            eq((inc["state"], inc["acknowledged_by"], inc["ack_note"], inc["assigned_to"]),
               ("acknowledged", "dispatch-7", "crew 3 sent", "crew 3"), "the incident")
            eq([(e["type"], e["by"]) for e in inc["events"]][1:],
               [("acknowledged", "dispatch-7"), ("updated", "dispatch-7"),
                ("updated", "crew 3")], "its history: each command once, in order")
            check(d.find_log(r"malformed command skipped.*offset=0") is not None,
                  "the malformed message is logged with its offset")
            check(d.find_log(r"command refused.*no incident 999") is not None,
                  "the refusal says why")
            # The acknowledgement is an incident event like any other: dispatch's confirmation.
            msgs = k.consume(3)
            eq(by_incident(msgs, iid), ["firing", "acknowledged", "updated"],
               "events on the incidents topic")
            # kill -9 right after a command: whether or not its offset was committed, it is
            # applied exactly once.
            produce(k, {"id": iid, "action": "resolve", "by": "dispatch-7",
                        "reason": "main repaired", "command_id": "c-3"})
            wait_for(lambda: incident(d, iid)["state"] == "resolved", what="resolved")
            d.kill9()
            d.start()
            d.wait_log(r"consuming incident commands")
            produce(k, {"id": iid, "action": "comment", "by": "crew 3", "text": "site cleaned",
                        "command_id": "c-4"})
            wait_for(lambda: incident(d, iid)["events"][-1]["note"] == "site cleaned",
                     timeout=60, what="a command after the restart")
            inc = incident(d, iid)
            eq([e["type"] for e in inc["events"]],
               ["firing", "acknowledged", "updated", "updated", "resolved", "updated"],
               "every command applied once across kill -9")
            eq(inc["resolve_reason"], "main repaired", "the resolve reason")
    finally:
        k.close()


if __name__ == "__main__":
    run(globals())
