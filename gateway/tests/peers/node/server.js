// A real SMPP peer (npm `smpp`) playing the SMSC for gateway/tests/interop_node_smsc.rs.
//
// Usage: node server.js PORT [--throttle N] [--drop-on TEXT]
//   - listens on 127.0.0.1:PORT and prints `listening PORT` once ready;
//   - accepts bind_transceiver/transmitter/receiver from system_id "gw" / password "secret"
//     (anything else gets ESME_RBINDFAIL);
//   - answers submit_sm with message_id "m<N>" and prints one JSON line per accepted submit;
//   - answers the first N submit_sm with ESME_RTHROTTLED when --throttle N is given;
//   - destroys the connection, without answering, the first time a submit_sm carries TEXT
//     (--drop-on TEXT), so the client must re-send it on a new bind;
//   - for a USSD submit (ussd_service_op 2) sends back a deliver_sm with ussd_service_op 18,
//     the same its_session_info and short_message "1", from the MSISDN to the service code;
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

const server = smpp.createServer(function (session) {
  const onBind = function (pdu) {
    if (pdu.system_id !== 'gw' || pdu.password !== 'secret') {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      session.close();
      return;
    }
    session.send(pdu.response({ system_id: 'NODESMSC' }));
    report({ event: 'bound', command: pdu.command, interface_version: pdu.interface_version });
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
    const body = text(pdu);
    if (dropOn !== null && !dropped && body === dropOn) {
      dropped = true;
      report({ event: 'dropped', text: body });
      session.destroy();
      return;
    }
    if (throttleLeft > 0) {
      throttleLeft -= 1;
      report({ event: 'throttled', text: body });
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      return;
    }
    messageCounter += 1;
    const messageId = 'm' + messageCounter;
    session.send(pdu.response({ message_id: messageId }));
    const op = pdu.ussd_service_op;
    const info = pdu.its_session_info;
    report({
      event: 'accepted',
      text: body,
      message_id: messageId,
      ussd_service_op: op === undefined ? null : op,
      its_session_info: info ? Buffer.from(info).toString('hex') : null,
    });
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
process.stdin.on('end', function () { process.exit(0); });
process.stdin.on('close', function () { process.exit(0); });
process.stdin.resume();
setTimeout(function () { process.exit(0); }, 120000).unref();
