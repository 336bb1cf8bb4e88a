# The python handler contract: `def handler(event, context)`. What it returns, as JSON, is
# the invocation's `output`; an exception is `status: "error"` with its message and stack.


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"Hello, {name}!", "runtime": "python", "function": context["function"], "version": context["version"]}
