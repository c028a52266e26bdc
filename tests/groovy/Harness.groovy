/*
 * Test harness for the camseg Groovy scripts (run by tests/test_groovy.py), one JVM for everything:
 *
 *   java -cp groovy-4.0.26.jar groovy.ui.GroovyMain tests/groovy/Harness.groovy STUBS CLASSES JOBS REPORT
 *
 * STUBS: tests/groovy/stubs (compiled into the folder CLASSES first).
 * JOBS (JSON): {"parse": [files], "compile": [files], "runs": [scenarios]}
 *   parse    layer (a): CompilationUnit to Phases.CONVERSION (syntax only, no classpath).
 *   compile  layer (b): against the QuPath test doubles in `stubs`, to Phases.CLASS_GENERATION, with
 *            QuPath's default imports prepended as QuPath does (0.4 and 0.5+ flavours, which differ in
 *            the package of Dialogs); camseg_lib.groovy is compiled bare, as evaluate() loads it.
 *   runs     layer (c): run a script (or "scripts", several in turn) with the test doubles set up
 *            from the scenario (see testdoubles.World.reset) and record what it did.
 * REPORT.json: {"parse": {file: error|null}, "compile": {file: {flavour: error|null}}, "runs": [...]}
 */

import org.codehaus.groovy.control.CompilationFailedException
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases

// Mirrors QPEx.getDefaultImports(): an import line per core class, then QPEx statically.
// Only the core classes the test doubles provide; a script using any other class fails layer (b).
List<String> coreClasses = [
        'qupath.lib.scripting.QP', 'qupath.lib.images.ImageData', 'qupath.lib.images.servers.ImageServer',
        'qupath.lib.objects.PathObject', 'qupath.lib.objects.hierarchy.PathObjectHierarchy',
        'qupath.lib.objects.classes.PathClass', 'qupath.lib.projects.Projects', 'qupath.lib.io.GsonTools',
        'qupath.lib.io.PathIO', 'qupath.lib.scripting.ScriptAttributes',
]
Map<String, List<String>> flavours = [
        'qupath-0.4' : coreClasses + ['qupath.lib.gui.dialogs.Dialogs'],
        'qupath-0.5+': coreClasses + ['qupath.fx.dialogs.Dialogs'],
]
Closure<String> importText = { List<String> classes ->
    (classes.collect { 'import ' + it } + ['import qupath.lib.gui.scripting.QPEx',
                                           'import static qupath.lib.gui.scripting.QPEx.*']).join(';' + System.lineSeparator())
}

File stubsDir = new File(args[0])
File classesDir = new File(args[1])
File jobsFile = new File(args[2])
File reportFile = new File(args[3])

// ---- compile the test doubles once
classesDir.mkdirs()
def stubConfig = new CompilerConfiguration()
stubConfig.targetDirectory = classesDir
def stubUnit = new CompilationUnit(stubConfig)
stubsDir.eachFileRecurse { if (it.name.endsWith('.groovy')) stubUnit.addSource(it) }
stubUnit.compile()
def stubLoader = new GroovyClassLoader(ClassLoader.systemClassLoader)
stubLoader.addClasspath(classesDir.absolutePath)
def MiniJson = stubLoader.loadClass('testdoubles.MiniJson')
def World = stubLoader.loadClass('testdoubles.World')
Map jobs = (Map) MiniJson.parse(jobsFile.getText('UTF-8'))

def report = [parse: [:], compile: [:], runs: []]

// ---- layer (a): every script parses
for (String path in (jobs.parse ?: [])) {
    File file = new File(path)
    def unit = new CompilationUnit(new CompilerConfiguration())
    unit.addSource(file)
    try {
        unit.compile(Phases.CONVERSION)
        report.parse[file.name] = null
    } catch (CompilationFailedException e) {
        report.parse[file.name] = e.message
    }
}

// ---- layer (b): every script compiles against the test doubles
for (String path in (jobs.compile ?: [])) {
    File file = new File(path)
    def results = [:]
    boolean isLib = file.name == 'camseg_lib.groovy'
    for (flavour in (isLib ? ['evaluate()': null] : flavours)) {
        String source = file.getText('UTF-8')
        if (flavour.value != null)
            source = importText(flavour.value) + System.lineSeparator() + source
        def config = new CompilerConfiguration()
        def unit = new CompilationUnit(config, null, new GroovyClassLoader(stubLoader, config))
        unit.addSource(file.name, source)
        try {
            unit.compile(Phases.CLASS_GENERATION)
            results[flavour.key] = null
        } catch (CompilationFailedException e) {
            results[flavour.key] = e.message
        }
    }
    report.compile[file.name] = results
}

// ---- layer (c): run scripts against the test doubles
for (Map job in (jobs.runs ?: [])) {
    // "scripts": [files] runs several scripts one after the other in the same World (the user's
    // session in one image); the result is the first failure or the last script's.
    List<String> scripts = (List<String>) (job.scripts ?: [job.script])
    def result = [name: job.name, script: new File(scripts[-1]).name, ok: false]
    def out = new StringWriter()
    long started = System.currentTimeMillis()
    try {
        World.reset(job)
        for (String path in scripts) {
            File file = new File(path)
            result.script = file.name
            Throwable failure = runScript(file, job, out, flavours, importText, stubLoader, result)
            result.ok = failure == null
            if (failure != null) {
                result.errorClass = failure.getClass().name
                result.error = failure.message
                break
            }
        }
    } catch (Throwable t) {
        result.errorClass = t.getClass().name
        result.error = 'harness: ' + t
    }
    result.seconds = (System.currentTimeMillis() - started) / 1000.0
    result.output = out.toString()
    try {
        result.world = World.report()
    } catch (Throwable t) {
        result.world = null
    }
    report.runs << result
}

/** Run one script in the World set up for `job`; returns its failure (null: it finished). */
Throwable runScript(File file, Map job, StringWriter out, Map flavours, Closure importText, ClassLoader stubLoader, Map result) {
    def binding = new Binding()
    binding.setVariable('out', new PrintWriter(out, true))
    binding.setVariable('args', new String[0])
    binding.setVariable('qupath.script.file', job.noScriptFile ? null : file.absolutePath)
    binding.setVariable('qupath.script.batchSize', (job.batchSize ?: 1) as int)
    binding.setVariable('qupath.script.batchIndex', 0)
    String text = file.getText('UTF-8')
    // "settings": {"NAME": "groovy expression"} edits the script's settings block, as a user would.
    ((Map) (job.settings ?: [:])).each { name, value ->
        def pattern = ~('(?m)^(\\s*\\w+\\s+' + name + '\\s*=\\s*)[^/\\n]*')
        if (!(text =~ pattern).find())
            throw new IllegalArgumentException('harness: no setting ' + name + ' in ' + file.name)
        text = text.replaceFirst(pattern, '$1' + java.util.regex.Matcher.quoteReplacement(value.toString() + ' '))
    }
    String source = importText(flavours[(String) (job.flavour ?: 'qupath-0.5+')]) + System.lineSeparator() + text
    def script = new GroovyShell(stubLoader, binding).parse(source, file.name)
    Throwable failure = null
    def thread = Thread.start('script-' + job.name) {
        try {
            script.run()
        } catch (Throwable t) {
            failure = t
        }
    }
    if (job.interruptAfterMs != null) {
        // Like Run > Kill running script: interrupt the script thread, here once the output
        // shows `interruptWhenOutputContains` (if given), plus interruptAfterMs.
        if (job.interruptWhenOutputContains) {
            long deadline = System.currentTimeMillis() + 60000
            while (thread.isAlive() && !out.toString().contains((String) job.interruptWhenOutputContains)
                    && System.currentTimeMillis() < deadline)
                Thread.sleep(20)
        }
        thread.join(((Number) job.interruptAfterMs).longValue())
        result.interrupted = thread.isAlive()
        thread.interrupt()
    }
    thread.join(((Number) (job.timeoutMs ?: 240000)).longValue())
    if (thread.isAlive()) {
        thread.interrupt()
        thread.join(10000)
        failure = new RuntimeException('harness: script still running after timeout')
    }
    return failure
}

reportFile.setText(MiniJson.write(report), 'UTF-8')
