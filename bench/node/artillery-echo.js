// An Artillery processor for the side-by-side benchmark: one echo round
// trip per call, timed with the monotonic clock from just before the send
// to the echo's arrival, recorded as the histogram `echo_ms`. Artillery's
// ws engine has no latency figure of its own.
const PAYLOAD = 'x'.repeat(64);

function echo(context, ee, next) {
  const ws = context.ws;
  const sent = process.hrtime.bigint();
  ws.onmessage = () => {
    ws.onmessage = undefined;
    ee.emit('histogram', 'echo_ms', Number(process.hrtime.bigint() - sent) / 1e6);
    ee.emit('counter', 'echo.received', 1);
    next();
  };
  ee.emit('counter', 'echo.sent', 1);
  ws.send(PAYLOAD);
}

module.exports = { echo };
