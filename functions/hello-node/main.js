// The node handler contract: a module whose export (module.exports, or its `handler` or
// `default` property) is `async (event, context) => result`. The result, as JSON, is the
// invocation's `output`; a thrown error is `status: "error"` with its message and stack.
module.exports = async function handler(event, context) {
  const name = typeof event?.name === 'string' ? event.name : 'world';
  return { message: `Hello, ${name}!`, runtime: 'node', function: context.function, version: context.version };
};
