"""The server behind :class:`warm.WarmStart` (run as a script by it; not a test module).

``warm_server.py REQUESTS ANSWERS MODULE...``: it imports the modules once, then reads requests
on file descriptor REQUESTS. Each request (one JSON line: argv, env, cwd and two output files)
is run in a process forked from this one: the child takes the request's working folder,
environment and argv, points its stdin at ``/dev/null`` and its stdout/stderr at the two files,
and runs the console script (or ``python -c CODE``, ``python -m MODULE``) as the interpreter
would run it as ``__main__``. ``sys.exit`` and Ctrl-C reach the interpreter's own top level
(exit status, message, atexit handlers, flush of stdout and stderr); any other uncaught
exception is printed by ``sys.excepthook`` from the script's frame down, then the child exits
with 1, as the interpreter does. On file descriptor ANSWERS the server answers with the child's
pid, then its exit status (``subprocess``'s convention: ``-N`` for signal N).
"""

import gc
import importlib
import json
import os
import runpy
import sys
import types


#: the frames a real process would not have above the script's own
HARNESS = {__file__, runpy.__file__, "<frozen runpy>"}


def _run_as_main(request: dict, protocol: tuple) -> None:
    """In the forked child: become the process ``argv`` would have started, then run it."""
    argv = request["argv"]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    for fd in protocol:  # the server's request and answer pipes
        os.close(fd)
    if argv[0] == sys.executable and argv[1] == "-c":  # python -c CODE ARGS: sys.path[0] is ''
        sys.argv = ["-c", *argv[3:]]
        sys.path[0] = ""
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(argv[2], "<string>", "exec"), main.__dict__)
    elif argv[0] == sys.executable and argv[1] == "-m":  # python -m MODULE ARGS: sys.path[0] is the folder
        sys.argv = [argv[2], *argv[3:]]  # run_module puts the module's file first
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:  # a console script: sys.path[0] is its folder
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


def serve(requests: int, answers: int) -> None:
    # closefd=False: a child closes these descriptors at once, and its own files may reuse the
    # numbers; these objects must never close them again when the child exits
    incoming = os.fdopen(requests, "r", closefd=False)
    outgoing = os.fdopen(answers, "w", closefd=False)

    def answer(**fields) -> None:
        outgoing.write(json.dumps(fields) + "\n")
        outgoing.flush()

    answer(ready=os.getpid())
    for line in incoming:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _run_as_main(request, (requests, answers))
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as error:  # printed as the interpreter prints it: from the script down
                trace = error.__traceback__
                while trace is not None and trace.tb_frame.f_code.co_filename in HARNESS:
                    trace = trace.tb_next
                sys.excepthook(type(error), error.with_traceback(trace), trace)
                sys.exit(1)
            sys.exit(0)  # the script ended without sys.exit: the interpreter exits with 0
        answer(pid=pid)
        _, status = os.waitpid(pid, 0)
        answer(returncode=os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    fds = sys.argv[1:3]
    for name in sys.argv[3:]:  # what every console script it serves would import anyway
        importlib.import_module(name)
    # what the imports made is never garbage for the children: a collection that walked it
    # would copy every page of it into each child (the advice of the gc module for a fork server)
    gc.collect()
    gc.freeze()
    serve(int(fds[0]), int(fds[1]))
