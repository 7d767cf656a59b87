// A real SMPP peer (npm `smpp`) playing the SMSC for gateway/tests/interop_node_smsc.rs.
//
// Usage: node server.js PORT [--throttle N] [--drop-on TEXT]
// Everything it does is reported on stdout, one JSON object a line, so a test can check what
// the SMSC received rather than only what the client was told:
//   - listens on 127.0.0.1:PORT and prints {"event":"listening"} once ready;
//   - {"event":"connected","conn":N} / {"event":"closed","conn":N} for each TCP connection;
//   - accepts bind_transceiver/transmitter/receiver from system_id "gw" / password "secret"
//     (anything else gets ESME_RBINDFAIL) and prints {"event":"bound",...};
//   - answers submit_sm with message_id "m<N>" and prints {"event":"accepted",...} with what
//     the submit carried (addresses, service_type, data_coding, text, USSD TLVs);
//   - answers the first N submit_sm with ESME_RTHROTTLED when --throttle N is given, printing
//     {"event":"throttled",...} with the same fields;
//   - destroys the connection, without answering, the first time a submit_sm carries TEXT
//     (--drop-on TEXT), so the client must re-send it on a new bind ({"event":"dropped",...});
//   - for a USSD submit (ussd_service_op 2) sends back a deliver_sm with ussd_service_op 18,
//     the same its_session_info and short_message "1", from the MSISDN to the service code;
//   - on the stdin line `idle`, prints {"event":"idle"} as soon as no connection is open: once
//     the client has stopped, every line before it is all the SMSC ever received (a connection
//     is closed only after node has handled every PDU read from it);
//   - exits when stdin closes (the test process is gone) or after 120 s, whichever is first.
'use strict';
const smpp = require('smpp');

const args = process.argv.slice(2);
const port = parseInt(args[0], 10);
if (!port) {
  console.error('usage: node server.js PORT [--throttle N] [--drop-on TEXT]');
  process.exit(64);
}
let throttleLeft = 0;
let dropOn = null;
for (let i = 1; i < args.length; i += 2) {
  if (args[i] === '--throttle') throttleLeft = parseInt(args[i + 1], 10) || 0;
  else if (args[i] === '--drop-on') dropOn = args[i + 1];
}
let dropped = false;
let messageCounter = 0;
let connections = 0;
let open = 0;
let idleAsked = false;

function text(pdu) {
  const sm = pdu.short_message;
  if (sm && typeof sm === 'object' && 'message' in sm) {
    return Buffer.isBuffer(sm.message) ? sm.message.toString('latin1') : String(sm.message);
  }
  return Buffer.isBuffer(sm) ? sm.toString('latin1') : String(sm || '');
}

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function reportIdleIfAsked() {
  if (idleAsked && open === 0) {
    idleAsked = false;
    report({ event: 'idle', connections: connections });
  }
}

// What a submit_sm carried, for the test to check.
function received(pdu, conn) {
  const info = pdu.its_session_info;
  return {
    conn: conn,
    service_type: pdu.service_type,
    source_addr: pdu.source_addr,
    source_addr_ton: pdu.source_addr_ton,
    source_addr_npi: pdu.source_addr_npi,
    destination_addr: pdu.destination_addr,
    dest_addr_ton: pdu.dest_addr_ton,
    dest_addr_npi: pdu.dest_addr_npi,
    data_coding: pdu.data_coding,
    text: text(pdu),
    ussd_service_op: pdu.ussd_service_op === undefined ? null : pdu.ussd_service_op,
    its_session_info: info ? Buffer.from(info).toString('hex') : null,
  };
}

const server = smpp.createServer(function (session) {
  connections += 1;
  open += 1;
  const conn = connections;
  report({ event: 'connected', conn: conn });
  session.on('close', function () {
    open -= 1;
    report({ event: 'closed', conn: conn });
    reportIdleIfAsked();
  });
  const onBind = function (pdu) {
    if (pdu.system_id !== 'gw' || pdu.password !== 'secret') {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      session.close();
      return;
    }
    session.send(pdu.response({ system_id: 'NODESMSC' }));
    report({
      event: 'bound',
      conn: conn,
      command: pdu.command,
      system_id: pdu.system_id,
      interface_version: pdu.interface_version,
    });
  };
  session.on('bind_transceiver', onBind);
  session.on('bind_transmitter', onBind);
  session.on('bind_receiver', onBind);
  session.on('enquire_link', function (pdu) {
    session.send(pdu.response());
  });
  session.on('unbind', function (pdu) {
    session.send(pdu.response());
    session.close();
  });
  session.on('submit_sm', function (pdu) {
    const fields = received(pdu, conn);
    if (dropOn !== null && !dropped && fields.text === dropOn) {
      dropped = true;
      report(Object.assign({ event: 'dropped' }, fields));
      session.destroy();
      return;
    }
    if (throttleLeft > 0) {
      throttleLeft -= 1;
      report(Object.assign({ event: 'throttled' }, fields));
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      return;
    }
    messageCounter += 1;
    const messageId = 'm' + messageCounter;
    session.send(pdu.response({ message_id: messageId }));
    report(Object.assign({ event: 'accepted', message_id: messageId }, fields));
    const op = pdu.ussd_service_op;
    const info = pdu.its_session_info;
    if (op === 2) {
      session.deliver_sm({
        service_type: 'USSD',
        source_addr: pdu.destination_addr,
        destination_addr: pdu.source_addr,
        short_message: '1',
        ussd_service_op: 18,
        its_session_info: info,
      });
    }
  });
  session.on('error', function () {});
});

server.listen(port, '127.0.0.1', function () {
  report({ event: 'listening', port: port });
});
let stdinBuffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', function (chunk) {
  stdinBuffer += chunk;
  let nl;
  while ((nl = stdinBuffer.indexOf('\n')) >= 0) {
    const line = stdinBuffer.slice(0, nl).trim();
    stdinBuffer = stdinBuffer.slice(nl + 1);
    if (line === 'idle') {
      idleAsked = true;
      reportIdleIfAsked();
    }
  }
});
process.stdin.on('end', function () { process.exit(0); });
process.stdin.on('close', function () { process.exit(0); });
process.stdin.resume();
setTimeout(function () { process.exit(0); }, 120000).unref();
