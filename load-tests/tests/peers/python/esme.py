#!/usr/bin/env python3
"""Interop harness: a real ESME we did not write (python smpplib) against the simulated SMSC.

Usage: esme.py PORT [COUNT]

Binds as a transceiver to 127.0.0.1:PORT (system_id/password from SMSC_SYSTEM_ID and
SMSC_PASSWORD, default gw/secret), submits COUNT (default 5) SMS with registered_delivery,
then reads until every submit_sm_resp, every receipt and EXPECT_MO (default 1) MO messages
have arrived or ESME_TIMEOUT seconds (default 20) have passed. Prints one JSON summary line
on stdout and exits 0 only if everything arrived and matched.

Note: smpplib 2.2.4 cannot parse a deliver_sm carrying ussd_service_op (its DeliverSM lacks
the field and raises KeyError), so the MO checked here is plain SMS.
"""

import importlib.metadata
import json
import os
import sys
import time

import smpplib.client
import smpplib.consts


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: esme.py PORT [COUNT]", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    system_id = os.environ.get("SMSC_SYSTEM_ID", "gw")
    password = os.environ.get("SMSC_PASSWORD", "secret")
    expect_mo = int(os.environ.get("EXPECT_MO", "1"))
    deadline = time.monotonic() + float(os.environ.get("ESME_TIMEOUT", "20"))

    summary = {
        "smpplib": importlib.metadata.version("smpplib"),
        "bound": False,
        "submitted": 0,
        "accepted": 0,
        "rejected": [],
        "message_ids": [],
        "receipts": 0,
        "receipts_matched": 0,
        "receipt_sample": None,
        "mo": 0,
        "mo_texts": [],
        "unbound": False,
        "error": None,
    }
    receipt_ids = []

    client = smpplib.client.Client("127.0.0.1", port, timeout=1, allow_unknown_opt_params=True)

    def on_sent(pdu, **_kwargs):
        if pdu.status == smpplib.consts.SMPP_ESME_ROK:
            summary["accepted"] += 1
            summary["message_ids"].append(pdu.message_id.decode())

    def on_error(pdu):
        summary["rejected"].append({"command": pdu.command, "status": pdu.status})

    def on_received(pdu, **_kwargs):
        text = pdu.short_message.decode("ascii", "replace") if pdu.short_message else ""
        if (pdu.esm_class or 0) & 0x04:
            summary["receipts"] += 1
            summary["receipt_sample"] = text
            if text.startswith("id:"):
                receipt_ids.append(text[3:].split(" ", 1)[0])
        else:
            summary["mo"] += 1
            summary["mo_texts"].append(text)
        return smpplib.consts.SMPP_ESME_ROK

    client.set_message_sent_handler(on_sent)
    client.set_message_received_handler(on_received)
    client.set_error_pdu_handler(on_error)

    def done() -> bool:
        answered = summary["accepted"] + len(summary["rejected"])
        return (
            answered >= count
            and summary["receipts"] >= summary["accepted"]
            and summary["mo"] >= expect_mo
        )

    try:
        client.connect()
        client.bind_transceiver(system_id=system_id, password=password)
        summary["bound"] = True
        for i in range(count):
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_INTL,
                source_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                source_addr="4800",
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr="4860010%04d" % i,
                short_message=("interop %d" % i).encode(),
                registered_delivery=1,
            )
            summary["submitted"] += 1
        while not done() and time.monotonic() < deadline:
            client.read_once()
        client.unbind()
        summary["unbound"] = True
    except Exception as e:  # report any failure in the summary, not as a traceback only
        summary["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            client.disconnect()
        except Exception:
            pass

    summary["receipts_matched"] = len(set(receipt_ids) & set(summary["message_ids"]))
    print(json.dumps(summary), flush=True)
    ok = (
        summary["error"] is None
        and summary["bound"]
        and summary["accepted"] == count
        and summary["receipts_matched"] == count
        and summary["mo"] >= expect_mo
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
