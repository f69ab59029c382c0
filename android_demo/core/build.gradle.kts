// Plain Java, no Android and no third-party runtime dependency: the same sources compile with
// javac --release 8 in `make test-jvm` (repository root) and here for the app.
plugins {
    `java-library`
}

tasks.withType<JavaCompile>().configureEach {
    options.release.set(8)
    options.encoding = "UTF-8"
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // the tests read the shared vectors in <repo>/tests/vectors
    systemProperty("edgesdk.root", rootProject.projectDir.parentFile.absolutePath)
}
