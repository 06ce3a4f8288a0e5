/**
 * The python context driver: one `python3 -u` that keeps a module namespace between calls, like a
 * REPL (the value of a last expression is the call's `result`). Protocol in ./protocol.ts.
 */
import type { CodeDriver } from "./protocol.ts";

const source = String.raw`
import ast, builtins, json, os, sys, time, traceback

# Requests arrive on a private copy of stdin; the code itself reads /dev/null, so that input()
# or a child process cannot swallow the next request.
_requests = os.fdopen(os.dup(0), "rb")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
# Private copies of stdout and stderr: the end markers still arrive when the code closes or
# redirects fd 1 or 2.
_out = os.dup(1)
_err = os.dup(2)
_limit = 262144
_namespace = {"__name__": "__main__", "__builtins__": builtins}


def _write(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


def _clip(text):
    return text if len(text) <= _limit else text[:_limit] + "\n[truncated]"


def _run(code):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), _namespace)
    if last is None:
        return None
    value = eval(compile(last, "<cell>", "eval"), _namespace)
    if value is None:
        return None
    _namespace["_"] = value
    return _clip(repr(value))


def _failure(error):
    frames = error.__traceback__
    # The driver's frames come first; the user's start at the first "<cell>" frame.
    while frames is not None and frames.tb_frame.f_code.co_filename != "<cell>":
        frames = frames.tb_next
    text = "".join(traceback.format_exception(type(error), error, frames))
    try:
        sys.stderr.write(text)
    except BaseException:
        _write(_err, text.encode("utf-8", "replace"))
    return {"name": type(error).__name__, "value": _clip(str(error)), "traceback": _clip(text)}


def _serve(request):
    reply = {"exit_code": 0, "error": None, "result": None}
    env = request.get("env") or {}
    saved = {name: os.environ.get(name) for name in env}
    try:
        os.environ.update(env)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        reply["result"] = _run(request["code"])
    except SystemExit as exit:
        status = exit.code
        if status is None:
            status = 0
        elif not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        reply["exit_code"] = status
    except BaseException as error:
        reply["exit_code"] = 1
        reply["error"] = _failure(error)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return reply


def _main():
    while True:
        try:
            line = _requests.readline()
        except KeyboardInterrupt:
            continue  # an interrupt that came after the reply
        if not line:
            return
        request = json.loads(line)
        token = request["token"].encode()
        started = time.monotonic()
        try:
            reply = _serve(request)
        except KeyboardInterrupt:
            reply = {"exit_code": 1, "error": {"name": "KeyboardInterrupt", "value": "", "traceback": ""}, "result": None}
        reply["duration_ms"] = (time.monotonic() - started) * 1000
        _flush()
        _write(_err, token)
        _write(_out, token + json.dumps(reply).encode() + b"\n")


_main()
`;

export const pythonDriver: CodeDriver = {
  language: "python",
  once: (code) => ["python3", "-c", code],
  argv: ["python3", "-u", "-c", source],
  request: (call) => `${JSON.stringify(call)}\n`,
};
